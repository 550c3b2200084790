def test_org_and_key_roundtrip(cli):
    cli.ok("orgs", "create", "acme", "--name", "Acme Inc")
    created = cli.ok("keys", "create", "--org", "acme", "--name", "ci", "--scope", "read", "--json").json()
    assert created["secret"].startswith("kg_live_")
    assert created["key"]["status"] == "active"
    listed = cli.ok("keys", "list", "--org", "acme", "--json").json()
    assert [k["id"] for k in listed["items"]] == [created["key"]["id"]]
