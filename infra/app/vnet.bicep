// Optional VNet (main.bicep's vnetEnabled): one subnet for private endpoints, one delegated to the Flex app.
@description('Name of the virtual network.')
param vNetName string

param location string = resourceGroup().location
param tags object = {}

@description('Subnet for the storage and Key Vault private endpoints.')
param peSubnetName string = 'private-endpoints-subnet'

@description('Subnet for the Function App\'s VNet integration.')
param appSubnetName string = 'app'

module virtualNetwork 'br/public:avm/res/network/virtual-network:0.6.1' = {
  name: 'vnet-deployment'
  params: {
    name: vNetName
    addressPrefixes: [
      '10.0.0.0/16'
    ]
    location: location
    tags: tags
    subnets: [
      {
        name: peSubnetName
        addressPrefix: '10.0.1.0/24'
        privateEndpointNetworkPolicies: 'Disabled'
        privateLinkServiceNetworkPolicies: 'Enabled'
      }
      {
        name: appSubnetName
        addressPrefix: '10.0.2.0/24'
        privateEndpointNetworkPolicies: 'Disabled'
        privateLinkServiceNetworkPolicies: 'Enabled'
        delegation: 'Microsoft.App/environments' // Flex Consumption VNet integration requires this delegation
      }
    ]
  }
}

output peSubnetName string = peSubnetName
output peSubnetID string = '${virtualNetwork.outputs.resourceId}/subnets/${peSubnetName}'
output appSubnetName string = appSubnetName
output appSubnetID string = '${virtualNetwork.outputs.resourceId}/subnets/${appSubnetName}'
