from conftest import PNID, auth, wrote_recently


async def test_block_through_api(client, service):
    await wrote_recently(service, PNID, "573001234567")
    resp = await client.post(f"/admin/api/connectors/{PNID}/blocks", json={"number": "+57 300 123 4567"}, headers=auth())
    assert resp.status == 201
    assert (await resp.json())["number"] == "573001234567"
