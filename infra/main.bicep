// Bridgework in Azure: wires the resource group, the generic resources (Azure Verified Modules,
// pinned) and the app-specific local modules. Deployed by `azd up`; see infra/README.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the resource token and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region for every resource. Must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Put storage and Key Vault behind private endpoints and integrate the app with a VNet.')
param vnetEnabled bool = false

@description('Durable backend: the Azure Storage provider (host.json default) or the Durable Task Scheduler.')
@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'

@description('With the Azure Storage backend, keep the task hub in its own storage account (Durable docs advise it under load).')
param separateTaskHubStorage bool = false

@description('Durable Task Scheduler SKU, used only when durableBackend is DurableTaskScheduler.')
@allowed([
  'Consumption'
  'Dedicated'
])
param durableTaskSchedulerSku string = 'Consumption'

@description('Addresses allowed to reach the Durable Task Scheduler. Callers still need an Entra role; narrow this in production.')
param durableTaskSchedulerIpAllowlist array = [
  '0.0.0.0/0'
]

@minLength(3)
@maxLength(45)
@description('Durable task hub name; becomes BRIDGEWORK_TASK_HUB, which host.json reads as %BRIDGEWORK_TASK_HUB%.')
param taskHubName string = 'bridgework'

@description('Prefix of the Table Storage tables Bridgework creates (BRIDGEWORK_TABLE_PREFIX).')
param tablePrefix string = 'bw'

@description('How the app authenticates to Dataverse as its application user.')
@allowed([
  'ClientSecret' // the app registration's secret, stored in Key Vault by an operator after provisioning
  'FederatedIdentity' // no secret: the app registration trusts this app's managed identity
])
param dataverseAuthMode string = 'ClientSecret'

@description('Application (client) id of the Entra app registration that is the Dataverse application user. Not a secret.')
param dataverseClientId string = ''

@description('Name of the Key Vault secret that holds the Dataverse client secret (ClientSecret mode only).')
param dataverseSecretName string = 'dataverse-client-secret'

@minLength(36)
@maxLength(36)
@description('Application (client) id of the Entra app registration that callers get tokens for (App Service Authentication).')
param authClientId string

@description('Entra tenant that issues the API callers\' tokens.')
param authTenantId string = tenant().tenantId

@description('Keep function keys usable for automation: Easy Auth then admits anonymous requests and the app itself refuses callers with neither a principal nor a key.')
param allowFunctionKeyCallers bool = true

@description('Flex Consumption instance memory (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption scale-out cap. Dataverse allows 52 concurrent requests per application user, so more instances only buy 429s.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 20

@description('Object id of the person or pipeline running azd; gets Key Vault Secrets Officer to store the Dataverse secret. Empty: no grant.')
param principalId string = ''

@description('Kind of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Also give principalId data access to the storage accounts. Off by default: they hold patient data.')
param grantPrincipalStorageAccess bool = false

// Optional name overrides; empty means "abbreviation + resource token".
param resourceGroupName string = ''
param apiServiceName string = ''
param apiUserAssignedIdentityName string = ''
param appServicePlanName string = ''
param storageAccountName string = ''
param taskHubStorageAccountName string = ''
param keyVaultName string = ''
param logAnalyticsName string = ''
param applicationInsightsName string = ''
param durableTaskSchedulerName string = ''
param vNetName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = !empty(apiServiceName) ? apiServiceName : '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var useDurableTaskScheduler = durableBackend == 'DurableTaskScheduler'
var useTaskHubStorage = !useDurableTaskScheduler && separateTaskHubStorage
var resolvedVNetName = !empty(vNetName) ? vNetName : '${abbrs.networkVirtualNetworks}${resourceToken}'

// Durable's Azure Storage provider needs blobs, queues and tables; Files is a legacy Consumption need.
var storageEndpointConfig = {
  enableBlob: true // AzureWebJobsStorage, the Flex deployment package, bundles and reports
  enableQueue: true // Durable control and work-item queues
  enableTable: true // Durable history and instances, Bridgework progress and journal
  enableFiles: false
}

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// One user-assigned identity reaches storage, Key Vault, App Insights and the scheduler: no keys anywhere.
module apiUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'apiUserAssignedIdentity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: !empty(apiUserAssignedIdentityName) ? apiUserAssignedIdentityName : '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
  }
}

module appServicePlan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'appserviceplan'
  scope: rg
  params: {
    name: !empty(appServicePlanName) ? appServicePlanName : '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true // Linux: Flex Consumption has no Windows workers
    location: location
    tags: tags
  }
}

// AzureWebJobsStorage, the deployment container, bundles, reports and Bridgework's tables.
module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only: a leaked key would expose patient data
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    dnsEndpointType: 'Standard'
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: vnetEnabled ? {
      defaultAction: 'Deny'
      bypass: 'None'
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        {
          name: deploymentStorageContainerName
        }
      ]
    }
    location: location
    tags: tags
  }
}

// Optional dedicated task-hub account, so Durable's queue polling does not compete with bundle I/O.
module taskHubStorage 'br/public:avm/res/storage/storage-account:0.8.3' = if (useTaskHubStorage) {
  name: 'taskHubStorage'
  scope: rg
  params: {
    name: !empty(taskHubStorageAccountName) ? taskHubStorageAccountName : '${abbrs.storageStorageAccounts}hub${resourceToken}'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only, as for the main account
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    dnsEndpointType: 'Standard'
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: vnetEnabled ? {
      defaultAction: 'Deny'
      bypass: 'None'
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    location: location
    tags: tags
  }
}

// Dataverse application credentials live here, read by the app through Key Vault references.
module keyVault 'br/public:avm/res/key-vault/vault:0.11.0' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true // Entra roles, not access policies: same model as storage
    enableVaultForDeployment: false // no VM, template or disk-encryption consumer reads this vault
    enableVaultForTemplateDeployment: false
    enableVaultForDiskEncryption: false
    enablePurgeProtection: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: vnetEnabled ? {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: '${uniqueString(deployment().name, location)}-loganalytics'
  scope: rg
  params: {
    name: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module monitoring 'br/public:avm/res/insights/component:0.6.0' = {
  name: '${uniqueString(deployment().name, location)}-appinsights'
  scope: rg
  params: {
    name: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true // ingestion only with an Entra token (the app's identity), never the instrumentation key alone
  }
}

// No Azure Verified Module for the scheduler could be pinned from public sources: small local module.
module durableTaskScheduler 'app/dts.bicep' = if (useDurableTaskScheduler) {
  name: 'durableTaskScheduler'
  scope: rg
  params: {
    name: !empty(durableTaskSchedulerName) ? durableTaskSchedulerName : '${abbrs.durableTaskSchedulers}${resourceToken}'
    location: location
    tags: tags
    taskHubName: taskHubName
    skuName: durableTaskSchedulerSku
    ipAllowlist: durableTaskSchedulerIpAllowlist
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    environmentName: environmentName
    applicationInsightsName: monitoring.outputs.name
    appServicePlanId: appServicePlan.outputs.resourceId
    runtimeName: 'python'
    runtimeVersion: '3.11'
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    enableBlob: storageEndpointConfig.enableBlob
    enableQueue: storageEndpointConfig.enableQueue
    enableTable: storageEndpointConfig.enableTable
    identityId: apiUserAssignedIdentity.outputs.resourceId
    identityClientId: apiUserAssignedIdentity.outputs.clientId
    keyVaultName: keyVault.outputs.name
    taskHubName: taskHubName
    tablePrefix: tablePrefix
    durableBackend: durableBackend
    taskHubStorageAccountName: useTaskHubStorage ? taskHubStorage.outputs.name : ''
    durableTaskSchedulerEndpoint: useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
    dataverseAuthMode: dataverseAuthMode
    dataverseClientId: dataverseClientId
    dataverseSecretName: dataverseSecretName
    authClientId: authClientId
    authTenantId: authTenantId
    allowFunctionKeyCallers: allowFunctionKeyCallers
    virtualNetworkSubnetId: vnetEnabled ? serviceVirtualNetwork.outputs.appSubnetID : ''
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbacAssignments'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    taskHubStorageAccountName: useTaskHubStorage ? taskHubStorage.outputs.name : ''
    appInsightsName: monitoring.outputs.name
    keyVaultName: keyVault.outputs.name
    durableTaskSchedulerName: useDurableTaskScheduler ? durableTaskScheduler.outputs.name : ''
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userIdentityPrincipalId: principalId
    userIdentityPrincipalType: principalType
    allowUserIdentityStorageAccess: grantPrincipalStorageAccess
    enableBlob: storageEndpointConfig.enableBlob
    enableQueue: storageEndpointConfig.enableQueue
    enableTable: storageEndpointConfig.enableTable
  }
}

// Optional network: one flag, two modules (VNet, then private endpoints with their DNS zones).
module serviceVirtualNetwork 'app/vnet.bicep' = if (vnetEnabled) {
  name: 'serviceVirtualNetwork'
  scope: rg
  params: {
    location: location
    tags: tags
    vNetName: resolvedVNetName
  }
}

module privateEndpoints 'app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'privateEndpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    virtualNetworkName: resolvedVNetName
    subnetName: vnetEnabled ? serviceVirtualNetwork.outputs.peSubnetName : ''
    storageAccountNames: useTaskHubStorage ? [
      storage.outputs.name
      taskHubStorage.outputs.name
    ] : [
      storage.outputs.name
    ]
    keyVaultName: keyVault.outputs.name
  }
}

// Outputs become azd environment values: names and endpoints only, never a key or a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_URI string = api.outputs.SERVICE_API_URI
output AZURE_FUNCTION_NAME string = api.outputs.SERVICE_API_NAME
output AZURE_API_IDENTITY_CLIENT_ID string = apiUserAssignedIdentity.outputs.clientId
output AZURE_API_IDENTITY_PRINCIPAL_ID string = apiUserAssignedIdentity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.name
output DURABLE_BACKEND string = durableBackend
output DURABLE_TASK_SCHEDULER_ENDPOINT string = useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
output BRIDGEWORK_TASK_HUB string = taskHubName
