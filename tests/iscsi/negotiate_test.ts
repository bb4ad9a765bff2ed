/** Negotiation rules (RFC 7143 §6.2, §13) as tables, and the session parameters they yield. */
import assert from "node:assert/strict";
import { Negotiation, respond, settle } from "../../src/iscsi/negotiate.ts";
import { IscsiProtocolError } from "../../src/iscsi/errors.ts";
import { OperationalError } from "../../src/errors.ts";

Deno.test("responder rules: min, max, AND, OR, lists, unknown keys", () => {
  const table: [string, string, string, string][] = [
    // key, offered, ours, answer
    ["MaxBurstLength", "1048576", "262144", "262144"],
    ["MaxBurstLength", "4096", "262144", "4096"],
    ["FirstBurstLength", "0x10000", "262144", "65536"],
    ["DefaultTime2Wait", "2", "5", "5"],
    ["DefaultTime2Retain", "20", "0", "0"],
    ["MaxOutstandingR2T", "8", "16", "8"],
    ["ErrorRecoveryLevel", "2", "0", "0"],
    ["InitialR2T", "No", "Yes", "Yes"],
    ["InitialR2T", "No", "No", "No"],
    ["ImmediateData", "Yes", "No", "No"],
    ["ImmediateData", "Yes", "Yes", "Yes"],
    ["DataPDUInOrder", "No", "Yes", "Yes"],
    ["HeaderDigest", "CRC32C,None", "None,CRC32C", "CRC32C"],
    ["HeaderDigest", "None,CRC32C", "CRC32C", "CRC32C"],
    ["DataDigest", "CRC32C", "None", "Reject"],
    ["X-com.example.Foo", "1", "", "NotUnderstood"],
    ["IFMarker", "No", "", "NotUnderstood"],
  ];
  for (const [k, o, ours, want] of table) {
    assert.equal(respond(k, o, ours), want, `${k}=${o} vs ${ours}`);
  }
  assert.throws(() => respond("MaxBurstLength", "100", "262144"), IscsiProtocolError); // below 512
  assert.throws(() => respond("MaxBurstLength", "abc", "262144"), IscsiProtocolError);
  assert.throws(() => respond("InitialR2T", "Maybe", "Yes"), IscsiProtocolError);
});

Deno.test("checking the target's answers to our offers", () => {
  assert.equal(settle("MaxBurstLength", "16776704", "262144"), "262144");
  assert.throws(() => settle("MaxBurstLength", "65536", "262144"), IscsiProtocolError);
  assert.equal(settle("DefaultTime2Wait", "2", "4"), "4");
  assert.throws(() => settle("DefaultTime2Wait", "2", "1"), IscsiProtocolError);
  assert.equal(settle("InitialR2T", "No", "Yes"), "Yes"); // OR may turn No into Yes
  assert.throws(() => settle("InitialR2T", "Yes", "No"), IscsiProtocolError);
  assert.equal(settle("ImmediateData", "Yes", "No"), "No"); // AND may turn Yes into No
  assert.throws(() => settle("ImmediateData", "No", "Yes"), IscsiProtocolError);
  assert.equal(settle("HeaderDigest", "None,CRC32C", "CRC32C"), "CRC32C");
  assert.throws(() => settle("HeaderDigest", "CRC32C", "None"), OperationalError);
  for (const v of ["NotUnderstood", "Irrelevant", "Reject"]) {
    assert.equal(settle("MaxBurstLength", "1024", v), null);
  }
});

Deno.test("a Normal session's offers, answers and resulting parameters", () => {
  const n = new Negotiation({
    sessionType: "Normal",
    headerDigest: "prefer-none",
    dataDigest: "crc32c",
  });
  const offers = new Map(n.offers());
  assert.equal(offers.get("MaxRecvDataSegmentLength"), "262144");
  assert.equal(offers.get("InitialR2T"), "No");
  assert.equal(offers.get("ImmediateData"), "Yes");
  assert.equal(offers.get("ErrorRecoveryLevel"), "0");
  assert.equal(offers.get("MaxConnections"), "1");
  assert.equal(offers.get("HeaderDigest"), "None,CRC32C");
  assert.equal(offers.get("DataDigest"), "CRC32C");
  // tgt-like answer: its own limits, its MaxRecvDataSegmentLength, and an offer of its own.
  const replies = n.receive([
    ["HeaderDigest", "None"],
    ["DataDigest", "CRC32C"],
    ["MaxRecvDataSegmentLength", "8192"],
    ["InitialR2T", "Yes"],
    ["ImmediateData", "Yes"],
    ["MaxBurstLength", "262144"],
    ["FirstBurstLength", "65536"],
    ["DefaultTime2Retain", "0"],
    ["MaxOutstandingR2T", "1"],
    ["TargetPortalGroupTag", "1"],
    ["TargetAlias", "disk"],
    ["X-vendor.Thing", "1"],
    ["OFMarker", "No"],
  ]);
  assert.deepEqual(replies, [["X-vendor.Thing", "NotUnderstood"], ["OFMarker", "NotUnderstood"]]);
  const p = n.result();
  assert.equal(p.headerDigest, false);
  assert.equal(p.dataDigest, true);
  assert.equal(p.maxXmitDataSegmentLength, 8192);
  assert.equal(p.maxRecvDataSegmentLength, 262144);
  assert.equal(p.initialR2T, true);
  assert.equal(p.immediateData, true);
  assert.equal(p.maxBurstLength, 262144);
  assert.equal(p.firstBurstLength, 65536);
  assert.equal(p.defaultTime2Retain, 0);
  assert.equal(p.maxOutstandingR2T, 1);
  assert.equal(p.targetPortalGroupTag, 1);
  assert.equal(p.targetAlias, "disk");
  assert.throws(() => n.receive([["TargetAlias", "a"], ["TargetAlias", "b"]]), IscsiProtocolError);
});

Deno.test("FirstBurstLength never exceeds MaxBurstLength; keys the target offers get answers", () => {
  const n = new Negotiation({ sessionType: "Normal", headerDigest: "none", dataDigest: "none" });
  assert.deepEqual(n.receive([["MaxBurstLength", "4096"], ["FirstBurstLength", "65536"]]), []);
  const p = n.result();
  assert.equal(p.maxBurstLength, 4096);
  assert.equal(p.firstBurstLength, 4096);
  // We offered DataSequenceInOrder=Yes; under OR the target cannot answer No.
  assert.throws(() => n.receive([["DataSequenceInOrder", "No"]]), IscsiProtocolError);
  const n2 = new Negotiation({
    sessionType: "Discovery",
    headerDigest: "none",
    dataDigest: "none",
  });
  assert.ok(!new Map(n2.offers()).has("InitialR2T"));
  assert.deepEqual(n2.receive([["DefaultTime2Wait", "0"], ["MaxConnections", "4"]]), [
    ["DefaultTime2Wait", "2"],
    ["MaxConnections", "1"],
  ]);
});
