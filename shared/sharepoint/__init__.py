"""SharePoint through Microsoft Graph (folders, uploads) and Dataverse's document-location pointers to it."""
