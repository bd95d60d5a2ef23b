"""Table and column definitions as plain dicts: the standard tables the migration touches, and builders that
custom tables, columns, keys and relationships created through the metadata API go through.

Definitions are plain JSON-able dicts (not classes) so the whole state can be dumped, snapshotted and persisted
with `json`. Attribute dicts use the metadata property names (`LogicalName`, `AttributeType`, `MaxLength`, …).
"""

from __future__ import annotations

import uuid
from typing import Any

ORGANIZATION_ID = "00000000-0000-0000-0000-00000000e001"
BUSINESS_UNIT_ID = "00000000-0000-0000-0000-00000000b001"

_TYPE_NAMES = {
    "String": "StringAttributeMetadata", "Memo": "MemoAttributeMetadata", "Integer": "IntegerAttributeMetadata",
    "BigInt": "BigIntAttributeMetadata", "Decimal": "DecimalAttributeMetadata", "Double": "DoubleAttributeMetadata",
    "Money": "MoneyAttributeMetadata", "DateTime": "DateTimeAttributeMetadata", "Boolean": "BooleanAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata", "State": "StateAttributeMetadata", "Status": "StatusAttributeMetadata",
    "Lookup": "LookupAttributeMetadata", "Owner": "LookupAttributeMetadata", "Customer": "LookupAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata", "EntityName": "EntityNameAttributeMetadata",
    "Virtual": "AttributeMetadata", "PartyList": "LookupAttributeMetadata",
}
TYPE_BY_ODATA = {("Microsoft.Dynamics.CRM." + v): k for k, v in _TYPE_NAMES.items()
                 if k not in ("Owner", "Customer", "PartyList")}
LOOKUP_TYPES = ("Lookup", "Owner", "Customer")
KEY_TYPES = ("String", "Integer", "Decimal", "DateTime", "Lookup", "Picklist")


def stable_id(*parts: str) -> str:
    """A deterministic GUID for built-in metadata, so dumps are the same on every start."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "bridgework-emulator/" + "/".join(parts)))


def odata_type(attr_type: str) -> str:
    return "Microsoft.Dynamics.CRM." + _TYPE_NAMES.get(attr_type, "AttributeMetadata")


def attr(table: str, name: str, attr_type: str, *, max_length: int | None = None, options: list[int] | None = None,
         targets: list[str] | None = None, create: bool = True, update: bool = True, required: str = "None",
         schema_name: str | None = None, custom: bool = False, fmt: str | None = None,
         behavior: str | None = None, min_value: float | None = None, max_value: float | None = None,
         precision: int | None = None, option_set_name: str | None = None, primary_id: bool = False,
         primary_name: bool = False, visible_at: float = 0.0, definition: dict[str, Any] | None = None,
         metadata_id: str | None = None) -> dict[str, Any]:
    """One column definition."""
    return {
        "LogicalName": name, "SchemaName": schema_name or name, "AttributeType": attr_type,
        "MetadataId": metadata_id or stable_id(table, name), "MaxLength": max_length,
        "Options": [{"Value": v, "Label": str(v)} for v in options] if options is not None else None,
        "OptionSetName": option_set_name, "Targets": targets, "IsValidForCreate": create,
        "IsValidForUpdate": update, "RequiredLevel": required, "IsCustomAttribute": custom, "Format": fmt,
        "DateTimeBehavior": behavior, "MinValue": min_value, "MaxValue": max_value, "Precision": precision,
        "IsPrimaryId": primary_id, "IsPrimaryName": primary_name, "VisibleAt": visible_at,
        "Definition": definition or {},
    }


def entity(logical: str, entity_set: str, primary_id: str, primary_name: str | None, otc: int, *,
           custom: bool = False, has_notes: bool = False, has_activities: bool = False, is_activity: bool = False,
           bulk: bool = True, ownership: str = "UserOwned", schema_name: str | None = None,
           metadata_id: str | None = None, definition: dict[str, Any] | None = None) -> dict[str, Any]:
    """One table definition with its system columns (id, owner, state, dates, version)."""
    e: dict[str, Any] = {
        "LogicalName": logical, "SchemaName": schema_name or logical, "EntitySetName": entity_set,
        "MetadataId": metadata_id or stable_id(logical), "PrimaryIdAttribute": primary_id,
        "PrimaryNameAttribute": primary_name, "ObjectTypeCode": otc, "IsCustomEntity": custom,
        "IsActivity": is_activity, "OwnershipType": ownership, "HasNotes": has_notes, "HasActivities": has_activities,
        "Bulk": {"CreateMultiple": bulk, "UpdateMultiple": bulk, "UpsertMultiple": bulk},
        "Attributes": {}, "Keys": {}, "Nav": {}, "Collections": {}, "Definition": definition or {},
        "Published": True,
    }
    add_attr(e, attr(logical, primary_id, "Uniqueidentifier", primary_id=True, update=False))
    for name in ("createdon", "modifiedon"):
        add_attr(e, attr(logical, name, "DateTime", create=False, update=False, behavior="UserLocal"))
    add_attr(e, attr(logical, "overriddencreatedon", "DateTime", update=False, behavior="UserLocal"))
    add_attr(e, attr(logical, "versionnumber", "BigInt", create=False, update=False))
    if ownership == "UserOwned":
        add_attr(e, attr(logical, "ownerid", "Owner", targets=["systemuser", "team"]))
        e["Nav"]["ownerid"] = {"attribute": "ownerid", "targets": ["systemuser", "team"]}
    return e


def add_attr(e: dict[str, Any], a: dict[str, Any]) -> None:
    e["Attributes"][a["LogicalName"]] = a


def add_lookup(e: dict[str, Any], name: str, targets: list[str], nav: dict[str, str] | None = None,
               attr_type: str = "Lookup", **kw: Any) -> None:
    """A lookup column plus its single-valued navigation properties (`nav` maps nav name -> target table)."""
    add_attr(e, attr(e["LogicalName"], name, attr_type, targets=list(targets), **kw))
    for nav_name, target in (nav or {name: targets[0]}).items():
        e["Nav"][nav_name] = {"attribute": name, "targets": [target]}


def _state(e: dict[str, Any], states: list[int], statuses: list[int]) -> None:
    add_attr(e, attr(e["LogicalName"], "statecode", "State", options=states))
    add_attr(e, attr(e["LogicalName"], "statuscode", "Status", options=statuses))


def _strings(e: dict[str, Any], spec: dict[str, int], attr_type: str = "String") -> None:
    for name, length in spec.items():
        add_attr(e, attr(e["LogicalName"], name, attr_type, max_length=length))


# Appointment state -> allowed statuses (reference §4.7).
APPOINTMENT_STATES = {0: [1, 2], 1: [3], 2: [4], 3: [5, 6]}
APPOINTMENT_DEFAULT_STATUS = {0: 1, 1: 3, 2: 4, 3: 5}


def standard_entities() -> dict[str, dict[str, Any]]:
    """The built-in tables the migration and its tests use, keyed by logical name."""
    out: dict[str, dict[str, Any]] = {}

    su = entity("systemuser", "systemusers", "systemuserid", "fullname", 8, bulk=False, ownership="BusinessOwned")
    _strings(su, {"fullname": 200, "internalemailaddress": 100, "firstname": 64, "lastname": 64,
                  "domainname": 1024})
    add_attr(su, attr("systemuser", "isdisabled", "Boolean", create=False, update=False))
    add_attr(su, attr("systemuser", "applicationid", "Uniqueidentifier", update=False))
    out["systemuser"] = su

    team = entity("team", "teams", "teamid", "name", 9, bulk=False, ownership="BusinessOwned")
    _strings(team, {"name": 160})
    out["team"] = team

    org = entity("organization", "organizations", "organizationid", "name", 1019, bulk=False,
                 ownership="None")
    _strings(org, {"name": 160})
    add_attr(org, attr("organization", "maxuploadfilesize", "Integer", min_value=0, max_value=131_072_000))
    out["organization"] = org

    acc = entity("account", "accounts", "accountid", "name", 1)
    _strings(acc, {"name": 160, "telephone1": 50, "emailaddress1": 100, "address1_line1": 250,
                   "address1_city": 80, "address1_postalcode": 20, "accountnumber": 20})
    _state(acc, [0, 1], [1, 2])
    acc["HasNotes"] = True
    acc["HasActivities"] = True
    out["account"] = acc

    c = entity("contact", "contacts", "contactid", "fullname", 2, has_notes=True, has_activities=True)
    _strings(c, {"firstname": 50, "lastname": 50, "middlename": 50, "nickname": 100, "salutation": 100,
                 "suffix": 10, "jobtitle": 100, "emailaddress1": 100, "emailaddress2": 100, "telephone1": 50,
                 "telephone2": 50, "mobilephone": 50, "fax": 50, "address1_line1": 250, "address1_line2": 250,
                 "address1_line3": 250, "address1_city": 80, "address1_stateorprovince": 50,
                 "address1_postalcode": 20, "address1_country": 80, "governmentid": 50,
                 "employeeid": 50})
    add_attr(c, attr("contact", "fullname", "String", max_length=160, create=False, update=False,
                     primary_name=True))
    add_attr(c, attr("contact", "description", "Memo", max_length=2000))
    add_attr(c, attr("contact", "birthdate", "DateTime", fmt="DateOnly", behavior="DateOnly"))
    add_attr(c, attr("contact", "gendercode", "Picklist", options=[1, 2]))
    add_attr(c, attr("contact", "familystatuscode", "Picklist", options=[1, 2, 3, 4]))
    add_attr(c, attr("contact", "preferredcontactmethodcode", "Picklist", options=[1, 2, 3, 4, 5]))
    for flag in ("donotemail", "donotphone", "donotpostalmail", "donotbulkemail"):
        add_attr(c, attr("contact", flag, "Boolean"))
    add_attr(c, attr("contact", "numberofchildren", "Integer", min_value=0, max_value=1_000_000_000))
    add_attr(c, attr("contact", "creditlimit", "Money", min_value=0, max_value=1_000_000_000_000, precision=2))
    add_lookup(c, "parentcustomerid", ["account", "contact"],
               {"parentcustomerid_account": "account", "parentcustomerid_contact": "contact"},
               attr_type="Customer")
    _state(c, [0, 1], [1, 2])
    out["contact"] = c

    ap = entity("appointment", "appointments", "activityid", "subject", 4201, is_activity=True, bulk=False)
    _strings(ap, {"subject": 200, "location": 200, "category": 250, "subcategory": 250})
    add_attr(ap, attr("appointment", "description", "Memo", max_length=10000))
    for name in ("scheduledstart", "scheduledend", "actualstart", "actualend"):
        add_attr(ap, attr("appointment", name, "DateTime", behavior="UserLocal"))
    add_attr(ap, attr("appointment", "scheduleddurationminutes", "Integer", min_value=0, max_value=2_147_483_647))
    add_attr(ap, attr("appointment", "isalldayevent", "Boolean"))
    add_attr(ap, attr("appointment", "prioritycode", "Picklist", options=[0, 1, 2]))
    add_lookup(ap, "regardingobjectid", ["account", "contact"],
               {"regardingobjectid_account_appointment": "account",
                "regardingobjectid_contact_appointment": "contact"})
    add_attr(ap, attr("appointment", "requiredattendees", "PartyList", create=False, update=False))
    add_attr(ap, attr("appointment", "organizer", "PartyList", create=False, update=False))
    _state(ap, [0, 1, 2, 3], [1, 2, 3, 4, 5, 6])
    ap["Collections"]["appointment_activity_parties"] = {"entity": "activityparty", "attribute": "activityid"}
    out["appointment"] = ap

    party = entity("activityparty", "activityparties", "activitypartyid", None, 135, bulk=False, ownership="None")
    add_lookup(party, "activityid", ["appointment"], {"activityid_appointment": "appointment"})
    add_lookup(party, "partyid", ["systemuser", "contact", "account"],
               {"partyid_systemuser": "systemuser", "partyid_contact": "contact", "partyid_account": "account"})
    add_attr(party, attr("activityparty", "participationtypemask", "Picklist", options=list(range(1, 12)),
                         required="SystemRequired"))
    _strings(party, {"addressused": 320})
    out["activityparty"] = party

    note = entity("annotation", "annotations", "annotationid", "subject", 5, bulk=False)
    _strings(note, {"subject": 500, "filename": 255, "mimetype": 256})
    add_attr(note, attr("annotation", "notetext", "Memo", max_length=100_000))
    add_attr(note, attr("annotation", "documentbody", "Memo", max_length=None))
    add_attr(note, attr("annotation", "isdocument", "Boolean"))
    add_attr(note, attr("annotation", "filesize", "Integer", create=False, update=False))
    add_attr(note, attr("annotation", "objecttypecode", "EntityName", create=False, update=False))
    add_lookup(note, "objectid", ["account", "contact"], {"objectid_account": "account", "objectid_contact": "contact"})
    out["annotation"] = note

    site = entity("sharepointsite", "sharepointsites", "sharepointsiteid", "name", 9502, bulk=False)
    _strings(site, {"name": 100, "absoluteurl": 2000, "relativeurl": 255, "description": 2000})
    add_attr(site, attr("sharepointsite", "isdefault", "Boolean"))
    _state(site, [0, 1], [1, 2])
    out["sharepointsite"] = site

    loc = entity("sharepointdocumentlocation", "sharepointdocumentlocations", "sharepointdocumentlocationid", "name",
                 9508, bulk=False)
    _strings(loc, {"name": 100, "absoluteurl": 2000, "relativeurl": 255, "description": 2000})
    add_attr(loc, attr("sharepointdocumentlocation", "locationtype", "Picklist", options=[0, 1]))
    add_attr(loc, attr("sharepointdocumentlocation", "servicetype", "Picklist", options=[0, 1, 2, 3]))
    add_lookup(loc, "regardingobjectid", ["account", "contact"],
               {"regardingobjectid_account": "account", "regardingobjectid_contact": "contact"})
    add_lookup(loc, "parentsiteorlocation", ["sharepointsite", "sharepointdocumentlocation"],
               {"parentsiteorlocation_sharepointsite": "sharepointsite",
                "parentsiteorlocation_sharepointdocumentlocation": "sharepointdocumentlocation"})
    _state(loc, [0, 1], [1, 2])
    out["sharepointdocumentlocation"] = loc

    pub = entity("publisher", "publishers", "publisherid", "friendlyname", 7101, bulk=False, ownership="None")
    _strings(pub, {"uniquename": 256, "friendlyname": 256, "customizationprefix": 8, "description": 2000})
    add_attr(pub, attr("publisher", "customizationoptionvalueprefix", "Integer", min_value=10000, max_value=99999))
    out["publisher"] = pub

    sol = entity("solution", "solutions", "solutionid", "friendlyname", 7100, bulk=False, ownership="None")
    _strings(sol, {"uniquename": 65, "friendlyname": 256, "version": 256, "description": 2000})
    add_lookup(sol, "publisherid", ["publisher"])
    out["solution"] = sol
    return out


# Entity set for the parties' owner "appointment": parties live in activityparty.
PARTY_TABLE = "activityparty"


def entity_set_name(logical: str) -> str:
    """English-style plural of a logical name, as Dataverse derives EntitySetName."""
    if logical.endswith(("s", "x", "z", "ch", "sh")):
        return logical + "es"
    if logical.endswith("y") and len(logical) > 1 and logical[-2] not in "aeiou":
        return logical[:-1] + "ies"
    return logical + "s"
