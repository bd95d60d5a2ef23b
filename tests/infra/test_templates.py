"""Invariants of the Bicep templates, azure.yaml and the deploy package, checked as text.

No Bicep compiler runs here (infra/README.md says how to compile and deploy where one does), so these
tests pin what matters for security and for azd: pinned Azure Verified Modules, no keys anywhere,
identity-based storage, HTTPS and TLS 1.2, Key Vault references, Entra ID on the API, known roles.
"""

from __future__ import annotations

import json
import re

import pytest

from shared.settings import Settings
from tests.infra.bicep_text import (
    INFRA,
    REPO_ROOT,
    Declaration,
    all_declarations,
    bicep_files,
    declarations,
    matching_brace,
    outputs,
    parameters,
    simple_yaml,
    strip_comments,
)

MAIN = INFRA / "main.bicep"
API = INFRA / "app" / "api.bicep"
RBAC = INFRA / "app" / "rbac.bicep"
README = INFRA / "README.md"

AVM_REFERENCE = re.compile(r"^br/public:avm/(res|ptn|utl)/[a-z0-9-]+(/[a-z0-9-]+)+:(\d+)\.(\d+)\.(\d+)$")
LOCAL_APP_MODULES = {"app/api.bicep", "app/rbac.bicep"}
NETWORK_MODULES = {"app/vnet.bicep", "app/private-endpoints.bicep"}
# The Durable Task Scheduler has no Azure Verified Module whose version could be checked in public sources.
DOCUMENTED_EXCEPTIONS = {"app/dts.bicep"}

# Built-in Azure role definition ids (identical in every tenant) and their names.
KNOWN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "0ad04412-c4d5-4796-b79c-f76d14c8d402": "Durable Task Data Contributor",
}
GUID = re.compile(r"'([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})'")

# Ways a key or a secret gets into a template or an output.
FORBIDDEN_IN_TEMPLATES = [
    re.compile(r"listKeys", re.IGNORECASE),
    re.compile(r"\blist(AccountSas|ServiceSas|Secrets|ConnectionStrings|Credentials?)\b", re.IGNORECASE),
    re.compile(r"AccountKey", re.IGNORECASE),
    re.compile(r"SharedAccessKey", re.IGNORECASE),
    re.compile(r"SharedAccessSignature", re.IGNORECASE),
    re.compile(r"InstrumentationKey\s*=", re.IGNORECASE),
    re.compile(r"primaryKey|secondaryKey", re.IGNORECASE),
    re.compile(r"UseDevelopmentStorage", re.IGNORECASE),
    re.compile(r"@secure\(\)"),
]

# App settings the Flex Consumption plan rejects or ignores (runtime and deployment live in functionAppConfig).
FLEX_UNSUPPORTED_SETTINGS = [
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
]


def code(path) -> str:
    return strip_comments(path.read_text(encoding="utf-8"))


def modules_named(reference_prefix: str) -> list[Declaration]:
    return [
        d for d in all_declarations() if d.keyword == "module" and d.reference.startswith(reference_prefix)
    ]


def only(items: list[Declaration], what: str) -> Declaration:
    assert len(items) == 1, f"expected exactly one {what}, found {len(items)}"
    return items[0]


def block_after(text: str, key: str) -> str:
    """The `{...}` value of the first `key:` in `text`."""
    at = re.search(rf"\b{re.escape(key)}\s*:\s*\{{", text)
    assert at, f"{key} not found"
    open_at = at.end() - 1
    return text[open_at : matching_brace(text, open_at) + 1]


# ---- the text reader itself ----


def test_comment_stripping_keeps_urls_and_quotes_inside_strings() -> None:
    sample = "var a = 'https://x/${f('//', 'b')}' // gone\n/* gone\ntoo */ var b = 'it\\'s // kept'\n"
    stripped = strip_comments(sample)
    assert "https://x/${f('//', 'b')}'" in stripped
    assert "gone" not in stripped
    assert "it\\'s // kept" in stripped
    assert stripped.count("\n") == sample.count("\n")


def test_matching_brace_skips_braces_inside_interpolated_strings() -> None:
    sample = "x = { a: '${y}}{', b: { c: '${replace(z, '.', '{')}' } } tail"
    close_at = matching_brace(sample, sample.index("{"))
    assert sample[close_at + 1 :] == " tail"


# ---- modules ----


def test_every_registry_module_is_a_pinned_azure_verified_module() -> None:
    registry = [d for d in all_declarations() if d.keyword == "module" and ":" in d.reference]
    assert len(registry) >= 8
    for module in registry:
        assert AVM_REFERENCE.match(module.reference), (
            f"{module.path.name}: {module.reference} is not a pinned AVM"
        )


def test_pinned_avm_versions_match_the_readme_table() -> None:
    pinned = {
        d.reference.removeprefix("br/public:").rsplit(":", 1)[0]: d.reference.rsplit(":", 1)[1]
        for d in all_declarations()
        if d.keyword == "module" and d.reference.startswith("br/public:")
    }
    documented = dict(
        re.findall(r"^\|\s*`(avm/[^`]+)`\s*\|\s*`(\d+\.\d+\.\d+)`", README.read_text(), re.MULTILINE)
    )
    assert pinned == documented


def test_each_avm_module_is_pinned_at_one_version_across_files() -> None:
    versions: dict[str, set[str]] = {}
    for d in all_declarations():
        if d.keyword == "module" and d.reference.startswith("br/public:"):
            name, version = d.reference.rsplit(":", 1)
            versions.setdefault(name, set()).add(version)
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}


def test_local_modules_are_the_app_network_and_scheduler_ones_and_exist() -> None:
    local = {
        d.reference.removeprefix("./")
        for d in all_declarations()
        if d.keyword == "module" and ":" not in d.reference
    }
    assert local == LOCAL_APP_MODULES | NETWORK_MODULES | DOCUMENTED_EXCEPTIONS
    for reference in local:
        assert (INFRA / reference).is_file(), reference


def test_network_modules_sit_behind_the_single_vnet_flag() -> None:
    for d in declarations(MAIN):
        if d.keyword == "module" and d.reference.removeprefix("./") in NETWORK_MODULES:
            assert d.condition == "vnetEnabled", f"{d.symbol} is not behind vnetEnabled"
    assert re.search(r"^param vnetEnabled bool = false$", code(MAIN), re.MULTILINE)


def test_main_runs_at_subscription_scope_and_creates_the_resource_group() -> None:
    text = code(MAIN)
    assert re.search(r"^targetScope = 'subscription'$", text, re.MULTILINE)
    assert any(d.reference.startswith("Microsoft.Resources/resourceGroups@") for d in declarations(MAIN))
    scoped = [d for d in declarations(MAIN) if d.keyword == "module"]
    assert scoped and all(re.search(r"\bscope:\s*rg\b", d.body) for d in scoped)


# ---- no keys, no secrets ----


def test_no_template_lists_keys_or_embeds_an_account_key() -> None:
    files = [*bicep_files(), INFRA / "main.parameters.json", REPO_ROOT / "azure.yaml"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern in FORBIDDEN_IN_TEMPLATES:
            assert not pattern.search(text), f"{path.name} matches {pattern.pattern}"


def test_outputs_expose_no_secret_looking_names_or_values() -> None:
    secret_name = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CONNECTION|SAS|CREDENTIAL", re.IGNORECASE)
    secret_value = re.compile(r"connectionString|secret|password|key\d?\b|list\w*\(", re.IGNORECASE)
    for path in bicep_files():
        for name, value in outputs(path).items():
            assert not secret_name.search(name.replace("KEY_VAULT", "")), f"{path.name}: output {name}"
            assert not secret_value.search(value.replace("keyVault", "")), (
                f"{path.name}: output {name} = {value}"
            )
    assert "SERVICE_API_NAME" in outputs(MAIN)


# ---- storage ----


def test_every_storage_account_refuses_shared_keys_public_blobs_and_old_tls() -> None:
    accounts = modules_named("br/public:avm/res/storage/storage-account:")
    assert len(accounts) == 2  # host storage and the optional task-hub account
    for account in accounts:
        assert re.search(r"\ballowSharedKeyAccess:\s*false\b", account.body), account.symbol
        assert re.search(r"\ballowBlobPublicAccess:\s*false\b", account.body), account.symbol
        assert re.search(r"\bminimumTlsVersion:\s*'TLS1_2'", account.body), account.symbol
        assert re.search(r"\bsupportsHttpsTrafficOnly:\s*true\b", account.body), account.symbol


def test_host_storage_uses_the_managed_identity_for_blob_queue_and_table() -> None:
    text = code(API)
    assert re.search(r"AzureWebJobsStorage__credential:\s*'managedidentity'", text)
    assert re.search(r"AzureWebJobsStorage__clientId:\s*identityClientId\b", text)
    for service in ("blob", "queue", "table"):
        assert re.search(
            rf"AzureWebJobsStorage__{service}ServiceUri:\s*stg\.properties\.primaryEndpoints\.{service}\b",
            text,
        ), service
    assert not re.search(r"\bAzureWebJobsStorage\s*:", text), (
        "a plain AzureWebJobsStorage would be a connection string"
    )


def test_separate_task_hub_account_is_optional_and_reached_by_identity() -> None:
    main = code(MAIN)
    assert re.search(r"^param separateTaskHubStorage bool = false$", main, re.MULTILINE)
    hub = only([d for d in declarations(MAIN) if d.symbol == "taskHubStorage"], "task-hub storage module")
    assert hub.condition == "useTaskHubStorage"
    api = code(API)
    assert re.search(r"DurableTaskHubStorage__credential:\s*'managedidentity'", api)
    for service in ("blob", "queue", "table"):
        assert re.search(rf"DurableTaskHubStorage__{service}ServiceUri:", api), service
    assert re.search(r"storageProvider__connectionStringName:\s*'DurableTaskHubStorage'", api)


def test_storage_roles_cover_blob_queue_and_table_for_the_app_identity() -> None:
    text = code(RBAC)
    for role_var in (
        "storageBlobDataOwnerRoleId",
        "storageQueueDataContributorRoleId",
        "storageTableDataContributorRoleId",
    ):
        assert re.search(rf"guid\(storageAccount\.id, managedIdentityPrincipalId, {role_var}\)", text), (
            f"app identity lacks {role_var} on host storage"
        )


# ---- the Function App ----


def site() -> Declaration:
    return only(modules_named("br/public:avm/res/web/site:"), "web/site module")


def test_function_app_is_https_only_with_tls12_and_no_ftp_or_basic_publishing() -> None:
    body = site().body
    assert re.search(r"\bhttpsOnly:\s*true\b", body)
    site_config = block_after(body, "siteConfig")
    assert re.search(r"\bminTlsVersion:\s*'1\.2'", site_config)
    assert re.search(r"\bscmMinTlsVersion:\s*'1\.2'", site_config)
    assert re.search(r"\bftpsState:\s*'Disabled'", site_config)
    policies = dict(re.findall(r"name:\s*'(ftp|scm)'\s*\n\s*allow:\s*(\w+)", body))
    assert policies == {"ftp": "false", "scm": "false"}


def test_function_app_is_flex_consumption_python_311_with_a_user_assigned_identity() -> None:
    plan = only(modules_named("br/public:avm/res/web/serverfarm:"), "serverfarm module")
    assert re.search(r"name:\s*'FC1'", plan.body) and re.search(r"tier:\s*'FlexConsumption'", plan.body)
    main = code(MAIN)
    assert re.search(r"runtimeName:\s*'python'", main) and re.search(r"runtimeVersion:\s*'3\.11'", main)
    body = site().body
    assert re.search(r"kind:\s*'functionapp,linux'", body)
    assert re.search(r"systemAssigned:\s*false", body)
    assert re.search(r"userAssignedResourceIds:\s*\[\s*identityId\s*\]", body)
    assert re.search(r"type:\s*'UserAssignedIdentity'", block_after(body, "deployment"))
    only(modules_named("br/public:avm/res/managed-identity/user-assigned-identity:"), "identity module")


def test_no_flex_consumption_unsupported_setting_is_set() -> None:
    text = code(API)
    for setting in FLEX_UNSUPPORTED_SETTINGS:
        assert not re.search(rf"\b{setting}\s*:", text), setting


def test_app_settings_match_the_names_shared_settings_reads() -> None:
    text = code(API)
    fields = Settings.model_fields
    for field in ("environment", "task_hub", "table_prefix"):
        assert field in fields
        assert re.search(rf"\bBRIDGEWORK_{field.upper()}\s*:", text), field
    # Settings' identity aliases are exactly what the host storage settings provide.
    for field in ("blob_service_uri", "table_service_uri", "managed_identity_client_id"):
        alias = fields[field].validation_alias.choices[0]
        assert alias.startswith("AzureWebJobsStorage__")
        assert re.search(rf"\b{re.escape(alias)}\s*:", text), alias


def test_the_worker_gets_the_malloc_settings_the_local_host_sets_itself() -> None:
    from devhost import memory

    text = code(API)
    assert re.search(rf"\bMALLOC_ARENA_MAX\s*:\s*'{memory.DEFAULT_ARENAS}'", text)
    assert re.search(rf"\bMALLOC_MMAP_THRESHOLD_\s*:\s*'{memory.DEFAULT_MMAP_THRESHOLD}'", text)
    assert re.search(r"allAppSettings = union\([^)]*\bworkerMemorySettings\b", text)


# ---- Durable backends ----


def test_durable_task_scheduler_is_a_parameter_choice_reached_by_identity() -> None:
    main = code(MAIN)
    assert re.search(
        r"@allowed\(\[\s*'AzureStorage'\s*'DurableTaskScheduler'\s*\]\)\s*param durableBackend string = 'AzureStorage'",
        main,
    )
    scheduler = only(
        [d for d in declarations(MAIN) if d.symbol == "durableTaskScheduler"], "scheduler module"
    )
    assert scheduler.condition == "useDurableTaskScheduler"
    api = code(API)
    assert re.search(r"storageProvider__type:\s*'azureManaged'", api)
    assert re.search(r"Authentication=ManagedIdentity;ClientID=\$\{identityClientId\}", api)
    assert re.search(
        r"guid\(scheduler\.id, managedIdentityPrincipalId, durableTaskDataContributorRoleId\)", code(RBAC)
    )


# ---- Key Vault ----


def test_dataverse_secret_is_a_key_vault_reference_to_an_rbac_vault() -> None:
    vault = only(modules_named("br/public:avm/res/key-vault/vault:"), "key vault module")
    assert re.search(r"\benableRbacAuthorization:\s*true\b", vault.body)
    assert re.search(r"\benablePurgeProtection:\s*true\b", vault.body)
    assert not re.search(r"\bsecrets\s*:", vault.body), "secret values never live in templates"
    api = code(API)
    assert re.search(
        r"BRIDGEWORK_DATAVERSE_CLIENT_SECRET:\s*'@Microsoft\.KeyVault\(VaultName=\$\{keyVaultName\};SecretName=\$\{dataverseSecretName\}\)'",
        api,
    )
    assert re.search(r"keyVaultAccessIdentityResourceId:\s*identityId\b", site().body)
    assert re.search(
        r"guid\(keyVault\.id, managedIdentityPrincipalId, keyVaultSecretsUserRoleId\)", code(RBAC)
    )


def test_federated_identity_mode_needs_no_secret_at_all() -> None:
    api = code(API)
    federated = api[api.index("BRIDGEWORK_DATAVERSE_AUTH_MODE: 'federated'") :]
    federated = federated[: federated.index("}")]
    assert "KeyVault" not in federated
    assert re.search(r"BRIDGEWORK_DATAVERSE_FEDERATED_IDENTITY_CLIENT_ID:\s*identityClientId", federated)


# ---- monitoring ----


def test_application_insights_refuses_local_auth_and_the_app_uses_opentelemetry() -> None:
    insights = only(modules_named("br/public:avm/res/insights/component:"), "app insights module")
    assert re.search(r"\bdisableLocalAuth:\s*true\b", insights.body)
    api = code(API)
    assert re.search(
        r"APPLICATIONINSIGHTS_AUTHENTICATION_STRING:\s*'ClientId=\$\{identityClientId\};Authorization=AAD'",
        api,
    )
    assert re.search(r"AzureFunctionsJobHost__telemetryMode:\s*'OpenTelemetry'", api)
    assert re.search(r"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY:\s*'true'", api)
    assert re.search(
        r"guid\(applicationInsights\.id, managedIdentityPrincipalId, monitoringMetricsPublisherRoleId\)",
        code(RBAC),
    )


# ---- App Service Authentication ----


def test_app_service_authentication_validates_entra_id_tokens() -> None:
    api = code(API)
    open_at = api.index("{", api.index("var authSettings ="))
    auth = api[open_at : matching_brace(api, open_at) + 1]
    assert re.search(r"platform:\s*\{\s*enabled:\s*true", auth)
    aad = block_after(auth, "azureActiveDirectory")
    assert re.search(r"\benabled:\s*true\b", aad)
    assert re.search(r"clientId:\s*authClientId\b", aad)
    assert re.search(
        r"openIdIssuer:\s*'\$\{environment\(\)\.authentication\.loginEndpoint\}\$\{authTenantId\}/v2\.0'", aad
    )
    assert "api://${authClientId}" in aad
    assert re.search(r"requireHttps:\s*true", auth)
    assert "clientSecretSettingName" not in auth, "a bearer-token API needs no client secret"
    assert re.search(r"authSettingV2Configuration:\s*authSettings\b", site().body)


# ---- roles ----


def test_every_role_guid_is_a_known_role_named_in_its_comment() -> None:
    seen = set()
    for path in bicep_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for guid in GUID.findall(line):
                guid = guid.lower()
                assert guid in KNOWN_ROLES, f"{path.name}:{number}: unknown GUID {guid}"
                comment = line.split("//", 1)[1] if "//" in line else ""
                assert KNOWN_ROLES[guid] in comment, (
                    f"{path.name}:{number}: comment must name {KNOWN_ROLES[guid]}"
                )
                seen.add(guid)
    assert seen == set(KNOWN_ROLES)


def test_role_assignments_are_named_by_scope_principal_and_role() -> None:
    assignments = [
        d for d in all_declarations() if d.reference.startswith("Microsoft.Authorization/roleAssignments@")
    ]
    assert len(assignments) >= 10
    for a in assignments:
        name = re.search(r"\bname:\s*guid\((\w+)\.id,\s*(\w+),\s*(\w+)\)", a.body)
        assert name, f"{a.symbol} is not named guid(scope.id, principal, role)"
        scope_symbol, principal, role = name.groups()
        assert re.search(rf"\bscope:\s*{scope_symbol}\b", a.body), a.symbol
        assert re.search(rf"\bprincipalId:\s*{principal}\b", a.body), a.symbol
        assert re.search(rf"roleDefinitions',\s*{role}\)", a.body), a.symbol


def test_people_get_no_storage_data_access_unless_asked() -> None:
    main = code(MAIN)
    assert re.search(r"^param grantPrincipalStorageAccess bool = false$", main, re.MULTILINE)
    rbac = [d for d in declarations(RBAC) if d.symbol.endswith("_User") and "storageAccount.id" in d.body]
    assert rbac and all("allowUserIdentityStorageAccess" in d.condition for d in rbac)


# ---- parameters, names ----


def test_parameters_file_matches_main_bicep_parameters() -> None:
    declared = parameters(MAIN)
    supplied = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(supplied) <= set(declared), set(supplied) - set(declared)
    required = {name for name, has_default in declared.items() if not has_default}
    assert required <= set(supplied), required - set(supplied)


def test_abbreviations_cover_every_name_prefix_used() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"\babbrs\.(\w+)", code(MAIN)))
    assert used and used <= set(abbreviations), used - set(abbreviations)
    assert re.search(
        r"resourceToken = toLower\(uniqueString\(subscription\(\)\.id, environmentName, location\)\)",
        code(MAIN),
    )


def test_function_app_carries_the_azd_service_tag() -> None:
    assert re.search(r"'azd-service-name':\s*serviceName", site().body)
    assert re.search(r"param serviceName string = 'api'", code(API))


# ---- azure.yaml, .funcignore, requirements, host.json ----


def test_azure_yaml_declares_one_python_function_service_at_the_repo_root() -> None:
    config = simple_yaml((REPO_ROOT / "azure.yaml").read_text())
    assert list(config["services"]) == ["api"]
    api = config["services"]["api"]
    assert api["project"] in {".", "./"}
    assert api["language"] == "python" and api["host"] == "function"


@pytest.mark.parametrize(
    "folder",
    ["agent", "devhost", "emulator", "devtools", "bench", "tests", "infra", "node_modules", ".venv", "docs"],
)
def test_funcignore_keeps_dev_only_folders_out_of_the_package(folder: str) -> None:
    lines = {line.strip().rstrip("/") for line in (REPO_ROOT / ".funcignore").read_text().splitlines()}
    assert folder in lines


def test_funcignore_keeps_the_runtime_code_in_the_package() -> None:
    lines = {line.strip().rstrip("/") for line in (REPO_ROOT / ".funcignore").read_text().splitlines()}
    assert not lines & {"shared", "functions", "function_app.py", "host.json", "requirements.txt"}


def test_requirements_are_pinned_and_leave_out_the_worker() -> None:
    lines = [
        line.split("#", 1)[0].strip()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", line), f"not pinned: {line}"
        assert not line.lower().startswith("azure-functions-worker"), "the platform provides the worker"


def test_host_json_uses_the_v4_bundle_range_and_the_task_hub_setting() -> None:
    host = json.loads((REPO_ROOT / "host.json").read_text())
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    assert host["extensions"]["durableTask"]["hubName"] == "%BRIDGEWORK_TASK_HUB%"


def test_local_module_calls_pass_declared_parameters_and_every_required_one() -> None:
    checked = 0
    for d in all_declarations():
        if d.keyword != "module" or ":" in d.reference:
            continue
        target = d.path.parent / d.reference
        params_block = block_after(d.body, "params")
        key_lines = re.findall(r"^(\s+)(\w+)\s*:", params_block, re.MULTILINE)
        indent = min(len(spaces) for spaces, _ in key_lines)
        passed = {key for spaces, key in key_lines if len(spaces) == indent}
        declared = parameters(target)
        assert passed <= set(declared), f"{d.symbol}: unknown {passed - set(declared)}"
        required = {name for name, has_default in declared.items() if not has_default}
        assert required <= passed, f"{d.symbol}: missing {required - passed}"
        checked += 1
    assert checked == 5  # dts, api, rbac, vnet, private-endpoints
