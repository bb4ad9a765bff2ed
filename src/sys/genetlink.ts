/**
 * Generic netlink (include/uapi/linux/genetlink.h): family resolution through
 * the `nlctrl` controller (CTRL_CMD_GETFAMILY) and typed requests to a family.
 * A family that the kernel does not have (its module not loaded) is a
 * NetlinkError with code ENOENT.
 *
 * @example
 * ```ts
 * const nl = NetlinkSocket.open(NETLINK_GENERIC);
 * const nbd = resolveFamily(nl, "nbd");          // throws ENOENT without nbd.ko
 * const replies = genlRequest(nl, nbd, NBD_GENL_CMD.STATUS, new AttrWriter());
 * ```
 */
import { NetlinkParseError } from "./netlink.ts";
import { Attrs, AttrWriter, NetlinkSocket, NLM_F_DUMP } from "./netlink.ts";

/** The controller family's fixed id and commands. */
export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_GETFAMILY = 3;
export const CTRL_ATTR_FAMILY_ID = 1;
export const CTRL_ATTR_FAMILY_NAME = 2;
export const CTRL_ATTR_VERSION = 3;
export const CTRL_ATTR_HDRSIZE = 4;
export const CTRL_ATTR_MAXATTR = 5;
export const CTRL_ATTR_OPS = 6;
export const CTRL_ATTR_MCAST_GROUPS = 7;
export const CTRL_ATTR_MCAST_GRP_NAME = 1;
export const CTRL_ATTR_MCAST_GRP_ID = 2;
export const CTRL_ATTR_OP_ID = 1;
export const CTRL_ATTR_OP_FLAGS = 2;
/** struct genlmsghdr { u8 cmd; u8 version; u16 reserved; } */
export const GENL_HDRLEN = 4;

/** A resolved generic netlink family. */
export interface GenlFamily {
  name: string;
  id: number;
  version: number;
  maxAttr: number;
  /** Commands the family implements (CTRL_ATTR_OPS). */
  ops: number[];
  /** Multicast group name to id. */
  mcastGroups: Map<string, number>;
}

/** A decoded generic netlink message. */
export interface GenlMessage {
  cmd: number;
  version: number;
  attrs: Attrs;
}

/** Encode genlmsghdr + attributes. */
export function encodeGenl(cmd: number, version: number, attrs: Uint8Array): Uint8Array {
  const out = new Uint8Array(GENL_HDRLEN + attrs.length);
  out[0] = cmd;
  out[1] = version;
  out.set(attrs, GENL_HDRLEN);
  return out;
}

/** Decode genlmsghdr + attributes, bounds-checked. */
export function decodeGenl(payload: Uint8Array): GenlMessage {
  if (payload.length < GENL_HDRLEN) {
    throw new NetlinkParseError(`genetlink: message of ${payload.length} bytes has no genlmsghdr`);
  }
  return {
    cmd: payload[0],
    version: payload[1],
    attrs: Attrs.parse(payload.subarray(GENL_HDRLEN)),
  };
}

/**
 * Look a family up by name. Throws NetlinkError ENOENT when the kernel has
 * no such family (e.g. nbd before `modprobe nbd`).
 *
 * @example
 * ```ts
 * const fam = resolveFamily(nl, "nlctrl");   // id 0x10
 * ```
 */
export function resolveFamily(nl: NetlinkSocket, name: string): GenlFamily {
  const req = encodeGenl(
    CTRL_CMD_GETFAMILY,
    1,
    new AttrWriter().str(CTRL_ATTR_FAMILY_NAME, name).bytes(),
  );
  const replies = nl.request(GENL_ID_CTRL, 0, req, `genl family ${name}`);
  if (replies.length === 0) throw new NetlinkParseError(`genetlink: no reply for family ${name}`);
  const { attrs } = decodeGenl(replies[0].payload);
  const id = attrs.u16(CTRL_ATTR_FAMILY_ID);
  if (id === undefined) {
    throw new NetlinkParseError(`genetlink: family ${name} reply lacks CTRL_ATTR_FAMILY_ID`);
  }
  const mcastGroups = new Map<string, number>();
  for (const g of attrs.nested(CTRL_ATTR_MCAST_GROUPS)?.list ?? []) {
    const ga = Attrs.parse(g.data);
    const gname = ga.str(CTRL_ATTR_MCAST_GRP_NAME);
    const gid = ga.u32(CTRL_ATTR_MCAST_GRP_ID);
    if (gname !== undefined && gid !== undefined) mcastGroups.set(gname, gid);
  }
  const ops: number[] = [];
  for (const o of attrs.nested(CTRL_ATTR_OPS)?.list ?? []) {
    const op = Attrs.parse(o.data).u32(CTRL_ATTR_OP_ID);
    if (op !== undefined) ops.push(op);
  }
  return {
    name: attrs.str(CTRL_ATTR_FAMILY_NAME) ?? name,
    id,
    version: attrs.u32(CTRL_ATTR_VERSION) ?? 1,
    maxAttr: attrs.u32(CTRL_ATTR_MAXATTR) ?? 0,
    ops,
    mcastGroups,
  };
}

/**
 * Send a command to a family and return its decoded replies (after the ACK).
 * `dump` sends NLM_F_DUMP.
 *
 * @example
 * ```ts
 * const [reply] = genlRequest(nl, nbd, NBD_GENL_CMD.CONNECT, attrs, { call: "nbd CONNECT" });
 * const index = reply.attrs.u32(NBD_ATTR_INDEX);
 * ```
 */
export function genlRequest(
  nl: NetlinkSocket,
  family: GenlFamily,
  cmd: number,
  attrs: AttrWriter | Uint8Array,
  opts: { dump?: boolean; flags?: number; call?: string } = {},
): GenlMessage[] {
  const body = attrs instanceof AttrWriter ? attrs.bytes() : attrs;
  const flags = (opts.flags ?? 0) | (opts.dump ? NLM_F_DUMP : 0);
  const call = opts.call ?? `genl ${family.name} cmd ${cmd}`;
  return nl.request(family.id, flags, encodeGenl(cmd, family.version, body), call).map((m) =>
    decodeGenl(m.payload)
  );
}
