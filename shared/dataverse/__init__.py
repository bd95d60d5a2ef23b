"""Dataverse Web API client: schema spec and builder, throttled async client, bulk writer."""
