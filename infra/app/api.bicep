// The Bridgework Function App: Flex Consumption site, its app settings and App Service Authentication.
param name string
param location string = resourceGroup().location
param tags object = {}
param serviceName string = 'api'
param environmentName string
param applicationInsightsName string
param appServicePlanId string
param runtimeName string
param runtimeVersion string
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 20
param storageAccountName string
param deploymentStorageContainerName string
param enableBlob bool = true
param enableQueue bool = true
param enableTable bool = true
param identityId string
param identityClientId string
param keyVaultName string
param taskHubName string
param tablePrefix string

@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'
param taskHubStorageAccountName string = ''
param durableTaskSchedulerEndpoint string = ''

@allowed([
  'ClientSecret'
  'FederatedIdentity'
])
param dataverseAuthMode string = 'ClientSecret'
param dataverseClientId string = ''
param dataverseSecretName string = 'dataverse-client-secret'

param authClientId string
param authTenantId string = tenant().tenantId
param allowFunctionKeyCallers bool = true
param virtualNetworkSubnetId string = ''

resource stg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource taskHubStg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (!empty(taskHubStorageAccountName)) {
  name: taskHubStorageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Identity-based host storage: the Functions host builds its clients from these URIs and the
// user-assigned identity, so no connection string (and no account key) exists.
var storageSettings = union(
  {
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
  },
  enableBlob ? { AzureWebJobsStorage__blobServiceUri: stg.properties.primaryEndpoints.blob } : {},
  enableQueue ? { AzureWebJobsStorage__queueServiceUri: stg.properties.primaryEndpoints.queue } : {},
  enableTable ? { AzureWebJobsStorage__tableServiceUri: stg.properties.primaryEndpoints.table } : {}
)

// App Insights refuses local (key) auth, so telemetry is sent with an Entra token for this identity.
// telemetryMode is set here rather than in host.json so local runs keep the default pipeline.
var telemetrySettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AzureFunctionsJobHost__telemetryMode: 'OpenTelemetry'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  OTEL_SERVICE_NAME: 'bridgework-${serviceName}'
}

// Bridgework's own settings (shared/settings.py, BRIDGEWORK_ prefix).
var bridgeworkSettings = {
  BRIDGEWORK_ENVIRONMENT: environmentName
  BRIDGEWORK_TASK_HUB: taskHubName // host.json: "hubName": "%BRIDGEWORK_TASK_HUB%"
  BRIDGEWORK_TABLE_PREFIX: tablePrefix
  BRIDGEWORK_KEY_VAULT_URI: 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/'
}

// The secret never appears here: the platform resolves the reference with the identity below
// (keyVaultReferenceIdentity) and the app sees only the resolved value.
var dataverseSettings = dataverseAuthMode == 'ClientSecret' ? {
  BRIDGEWORK_DATAVERSE_AUTH_MODE: 'client_secret'
  BRIDGEWORK_DATAVERSE_CLIENT_ID: dataverseClientId
  BRIDGEWORK_DATAVERSE_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${dataverseSecretName})'
} : {
  BRIDGEWORK_DATAVERSE_AUTH_MODE: 'federated'
  BRIDGEWORK_DATAVERSE_CLIENT_ID: dataverseClientId
  // The managed identity whose token is the client assertion for the app registration's federated credential.
  BRIDGEWORK_DATAVERSE_FEDERATED_IDENTITY_CLIENT_ID: identityClientId
}

// host.json names AzureWebJobsStorage as the task hub connection; these settings override it
// (AzureFunctionsJobHost__ path) only when another backend or account is chosen.
var taskHubStorageSettings = !empty(taskHubStorageAccountName) ? {
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName: 'DurableTaskHubStorage'
  DurableTaskHubStorage__credential: 'managedidentity'
  DurableTaskHubStorage__clientId: identityClientId
  DurableTaskHubStorage__blobServiceUri: taskHubStg.properties.primaryEndpoints.blob
  DurableTaskHubStorage__queueServiceUri: taskHubStg.properties.primaryEndpoints.queue
  DurableTaskHubStorage__tableServiceUri: taskHubStg.properties.primaryEndpoints.table
} : {}

// The scheduler "connection string" carries an endpoint and an identity, no key.
var durableTaskSchedulerSettings = durableBackend == 'DurableTaskScheduler' ? {
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__type: 'azureManaged'
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
} : {}

// Easy Auth: Entra ID bearer tokens for the API app registration. It validates tokens and sets
// x-ms-client-principal (callers cannot set it themselves); the app maps that to tenant and role.
// Anonymous requests are let through only so function keys keep working for automation; the app
// refuses a request that carries neither a principal nor a key.
var authSettings = {
  platform: {
    enabled: true
    runtimeVersion: '~1'
  }
  globalValidation: {
    requireAuthentication: !allowFunctionKeyCallers
    unauthenticatedClientAction: allowFunctionKeyCallers ? 'AllowAnonymous' : 'Return401'
  }
  httpSettings: {
    requireHttps: true
    forwardProxy: {
      convention: 'NoProxy'
    }
  }
  identityProviders: {
    azureActiveDirectory: {
      enabled: true
      registration: {
        openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        clientId: authClientId
      }
      validation: {
        allowedAudiences: [
          'api://${authClientId}'
          authClientId
        ]
      }
    }
  }
  login: {
    tokenStore: {
      enabled: false // an API with bearer tokens needs no server-side session store
    }
  }
}

// glibc malloc in the Python worker (read at its start): two arenas for the activity threads, and large
// blocks (request bodies, a load part's lists) in mappings handed back when freed (devhost/memory.py).
var workerMemorySettings = {
  MALLOC_ARENA_MAX: '2'
  MALLOC_MMAP_THRESHOLD_: '131072'
}

var allAppSettings = union(
  storageSettings,
  workerMemorySettings,
  telemetrySettings,
  bridgeworkSettings,
  dataverseSettings,
  taskHubStorageSettings,
  durableTaskSchedulerSettings
)

module api 'br/public:avm/res/web/site:0.15.1' = {
  name: '${serviceName}-flex-consumption'
  params: {
    kind: 'functionapp,linux'
    name: name
    location: location
    tags: union(tags, { 'azd-service-name': serviceName })
    serverFarmResourceId: appServicePlanId
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [
        identityId
      ]
    }
    keyVaultAccessIdentityResourceId: identityId // Key Vault references resolve with the user-assigned identity
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
    siteConfig: {
      alwaysOn: false // not available on Flex Consumption
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    // Deployment goes through azd with Entra auth; basic (user/password) publishing stays off.
    basicPublishingCredentialsPolicies: [
      {
        name: 'ftp'
        allow: false
      }
      {
        name: 'scm'
        allow: false
      }
    ]
    virtualNetworkSubnetId: !empty(virtualNetworkSubnetId) ? virtualNetworkSubnetId : null
    appSettingsKeyValuePairs: allAppSettings
    authSettingV2Configuration: authSettings
  }
}

output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = 'https://${api.outputs.defaultHostname}'
