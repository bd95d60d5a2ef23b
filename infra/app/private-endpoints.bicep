// Optional private endpoints (main.bicep's vnetEnabled): blob, queue and table for each storage account,
// and the vault, each registered in its private DNS zone linked to the VNet.
param virtualNetworkName string
param subnetName string
param location string = resourceGroup().location
param tags object = {}

@description('Storage accounts that get blob, queue and table endpoints (Durable needs all three).')
param storageAccountNames array

param keyVaultName string

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: virtualNetworkName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

var storageServices = [
  'blob'
  'queue'
  'table'
]

// privatelink.vaultcore.azure.net is the public-cloud vault zone; sovereign clouds differ.
var storageZoneNames = [for service in storageServices: 'privatelink.${service}.${environment().suffixes.storage}']
var zoneNames = concat(storageZoneNames, [
  'privatelink.vaultcore.azure.net'
])

// Endpoint i serves account i / 3 and service i % 3.
var storageTargets = [for i in range(0, length(storageAccountNames) * length(storageServices)): {
  name: '${storageAccountNames[i / length(storageServices)]}-${storageServices[i % length(storageServices)]}'
  resourceId: resourceId('Microsoft.Storage/storageAccounts', storageAccountNames[i / length(storageServices)])
  groupId: storageServices[i % length(storageServices)]
  zoneName: storageZoneNames[i % length(storageServices)]
}]

var targets = concat(storageTargets, [
  {
    name: '${keyVaultName}-vault'
    resourceId: keyVault.id
    groupId: 'vault'
    zoneName: 'privatelink.vaultcore.azure.net'
  }
])

// One zone per service, created once and shared by every endpoint of that service.
module privateDnsZones 'br/public:avm/res/network/private-dns-zone:0.7.1' = [for zoneName in zoneNames: {
  name: 'zone-${replace(zoneName, '.', '-')}'
  params: {
    name: zoneName
    location: 'global'
    tags: tags
    virtualNetworkLinks: [
      {
        name: '${virtualNetworkName}-link-${take(toLower(uniqueString(zoneName, virtualNetworkName)), 6)}'
        virtualNetworkResourceId: vnet.id
        registrationEnabled: false
        location: 'global'
        tags: tags
      }
    ]
  }
}]

module endpoints 'br/public:avm/res/network/private-endpoint:0.11.0' = [for target in targets: {
  name: 'pep-${target.name}'
  params: {
    name: 'pep-${target.name}'
    location: location
    tags: tags
    subnetResourceId: '${vnet.id}/subnets/${subnetName}'
    privateLinkServiceConnections: [
      {
        name: '${target.name}-connection'
        properties: {
          privateLinkServiceId: target.resourceId
          groupIds: [
            target.groupId
          ]
        }
      }
    ]
    customDnsConfigs: []
    privateDnsZoneGroup: {
      name: '${target.groupId}-dns-zone-group'
      privateDnsZoneGroupConfigs: [
        {
          name: '${target.groupId}-a-record'
          privateDnsZoneResourceId: resourceId('Microsoft.Network/privateDnsZones', target.zoneName)
        }
      ]
    }
  }
  dependsOn: [
    privateDnsZones
  ]
}]
