"""A local stand-in for the Azure Functions host with the Durable extension (dev-only, never deployed).

It loads any v2-model function app and plays the host's part: HTTP and timer triggers, activities,
and orchestrators run through the Durable SDK's own replay engine (history in, actions out), with
state in Table/Blob storage so a killed host resumes where it stopped, and the Durable HTTP
management API so the SDK's real `DurableOrchestrationClient` and curl work against it.
See devhost/README.md.
"""
