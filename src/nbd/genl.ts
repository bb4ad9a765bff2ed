/**
 * The kernel's nbd generic netlink family (include/uapi/linux/nbd-netlink.h,
 * drivers/block/nbd.c): its attributes, commands and client flags, and
 * `NbdKernel`, which connects sockets to /dev/nbdN, disconnects, queries and
 * reconfigures a live device (the takeover path, docs/kernel.md), and
 * `NbdLinkWatch`, which hears the kernel mark a device's socket dead.
 *
 * Never the NBD_DO_IT ioctl: there the device lives only as long as the
 * ioctl call blocks in the client, so any signal to that process (systemd
 * SIGSTOPs/SIGTERMs everything at shutdown) tears the root disk down. With
 * netlink the kernel holds its own reference to the socket; the device stays
 * until NBD_CMD_DISCONNECT, and a dead socket can be replaced with
 * NBD_CMD_RECONFIGURE within DEAD_CONN_TIMEOUT.
 *
 * @example
 * ```ts
 * const nbd = await NbdKernel.open();
 * const index = nbd.connect({ sockets: [fd], sizeBytes: 64n << 20n, blockSize: 512,
 *   serverFlags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH, backendIdentifier: "iqn.2026-11.test:disk1/1" });
 * console.log(`/dev/nbd${index}`);
 * nbd.close();
 * ```
 */
import { OperationalError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { pageSize } from "../sys/process.ts";
import { ERRNO, SysError } from "../sys/errno.ts";
import { decodeGenl, type GenlFamily, genlRequest, resolveFamily } from "../sys/genetlink.ts";
import {
  Attrs,
  AttrWriter,
  NETLINK_GENERIC,
  NetlinkError,
  NetlinkSocket,
  type NlMessage,
} from "../sys/netlink.ts";
import { modprobe, type ModuleLoader } from "./module.ts";

/** Generic netlink family name and version (nbd-netlink.h). */
export const NBD_GENL_FAMILY_NAME = "nbd";
export const NBD_GENL_VERSION = 1;
export const NBD_GENL_MCAST_GROUP_NAME = "nbd_mc_group";

/** Configuration attributes (enum in nbd-netlink.h). */
export const NBD_ATTR_INDEX = 1; // u32
export const NBD_ATTR_SIZE_BYTES = 2; // u64
export const NBD_ATTR_BLOCK_SIZE_BYTES = 3; // u64
export const NBD_ATTR_TIMEOUT = 4; // u64, seconds
export const NBD_ATTR_SERVER_FLAGS = 5; // u64, NBD transmission flags
export const NBD_ATTR_CLIENT_FLAGS = 6; // u64, NBD_CFLAG_*
export const NBD_ATTR_SOCKETS = 7; // nested NBD_SOCK_ITEM
export const NBD_ATTR_DEAD_CONN_TIMEOUT = 8; // u64, seconds
export const NBD_ATTR_DEVICE_LIST = 9; // nested NBD_DEVICE_ITEM
export const NBD_ATTR_BACKEND_IDENTIFIER = 10; // string
/** NBD_ATTR_DEVICE_LIST items. */
export const NBD_DEVICE_ITEM = 1;
export const NBD_DEVICE_INDEX = 1; // u32
export const NBD_DEVICE_CONNECTED = 2; // u8
/** NBD_ATTR_SOCKETS items. */
export const NBD_SOCK_ITEM = 1;
export const NBD_SOCK_FD = 1; // u32
/**
 * The family's commands: nbd-netlink.h's NBD_CMD_CONNECT ... NBD_CMD_STATUS,
 * held apart here because the wire protocol's NBD_CMD_* (constants.ts:
 * READ, WRITE, DISC...) reuse the same numbers for other things.
 */
export const NBD_GENL_CMD = {
  CONNECT: 1,
  DISCONNECT: 2,
  RECONFIGURE: 3,
  LINK_DEAD: 4,
  STATUS: 5,
} as const;
/** Client flags (include/uapi/linux/nbd.h). */
export const NBD_CFLAG_DESTROY_ON_DISCONNECT = 1 << 0;
export const NBD_CFLAG_DISCONNECT_ON_CLOSE = 1 << 1;

/** What NBD_CMD_CONNECT needs. */
export interface ConnectOptions {
  /** Device number N of /dev/nbdN; omitted: the kernel picks the first free one. */
  index?: number;
  /** Connected stream socket fds (the kernel takes its own reference; close yours after). */
  sockets: number[];
  /** Device size in bytes. */
  sizeBytes: bigint;
  /** Logical block size, a power of two from 512 to the page size. */
  blockSize: number;
  /** NBD transmission flags the server end implements (NBD_FLAG_*). */
  serverFlags: number;
  /**
   * Per-request timeout, seconds (default {@link DEFAULT_TIMEOUT_SEC}: 0).
   * With 0 the kernel never drops our socket on its own (a long target
   * outage is a slow request), and re-arms the timer every 30 s, requeueing
   * a request whose socket was replaced meanwhile: that recovers a request
   * lost with a crashed daemon's socket. With N > 0 and one connection a
   * timed-out request is requeued, never failed, but the socket is dropped
   * (docs/kernel.md "Takeover under I/O").
   */
  timeoutSec?: number;
  /**
   * How long the kernel holds requests after its socket died, waiting for
   * NBD_CMD_RECONFIGURE with a new one (the takeover window). Default 120.
   */
  deadConnTimeoutSec?: number;
  /** Names the backend; RECONFIGURE must give the same (sysfs: /sys/block/nbdN/backend). */
  backendIdentifier?: string;
  /** NBD_CFLAG_*; default NBD_CFLAG_DESTROY_ON_DISCONNECT. */
  clientFlags?: number;
}

/** What NBD_CMD_RECONFIGURE may change. */
export interface ReconfigureOptions {
  /**
   * New device size (NBD_ATTR_SIZE_BYTES), a multiple of the block size.
   * Linux 6.1 nbd_genl_reconfigure() → nbd_genl_size_set() → nbd_set_size()
   * sets it on the running device with set_capacity_and_notify()
   * (docs/kernel.md, "Growing a live device"). Like any RECONFIGURE of a
   * device that has a backend identifier, it must name it.
   */
  sizeBytes?: bigint;
  /** New sockets; the kernel puts them in place of sockets it has marked dead. */
  sockets?: number[];
  timeoutSec?: number;
  deadConnTimeoutSec?: number;
  /** Must equal the device's identifier when it has one. */
  backendIdentifier?: string;
  clientFlags?: number;
}

/** One device from NBD_CMD_STATUS. */
export interface NbdDeviceStatus {
  index: number;
  connected: boolean;
}

/** Default dead-connection timeout, seconds (docs/kernel.md). */
export const DEFAULT_DEAD_CONN_TIMEOUT_SEC = 120;
/**
 * Default kernel request timeout, seconds: none (docs/kernel.md "Takeover
 * under I/O"). A timeout > 0 would drop the socket during a long target
 * outage, and held I/O fails after DEAD_CONN_TIMEOUT if the daemon cannot
 * hand over a new one in time (its old connection still waits for the
 * target); with 0 the root disk just waits.
 */
export const DEFAULT_TIMEOUT_SEC = 0;

/**
 * The attributes of NBD_CMD_CONNECT, checked: sockets present, block size a
 * power of two from 512 to `page` (the machine's page size unless given),
 * size a positive multiple of it.
 *
 * @example
 * ```ts
 * const attrs = connectAttributes({ sockets: [5], sizeBytes: 1n << 26n, blockSize: 512, serverFlags: 1 });
 * ```
 */
export function connectAttributes(o: ConnectOptions, page: number = pageSize()): AttrWriter {
  if (o.sockets.length === 0) throw new UsageError("NBD connect needs at least one socket");
  checkBlockSize(o.blockSize, page);
  if (o.sizeBytes <= 0n || o.sizeBytes % BigInt(o.blockSize) !== 0n) {
    throw new UsageError(
      `NBD size ${o.sizeBytes} is not a positive multiple of the block size ${o.blockSize}`,
    );
  }
  const w = new AttrWriter();
  if (o.index !== undefined) w.u32(NBD_ATTR_INDEX, o.index);
  w.u64(NBD_ATTR_SIZE_BYTES, o.sizeBytes);
  w.u64(NBD_ATTR_BLOCK_SIZE_BYTES, BigInt(o.blockSize));
  w.u64(NBD_ATTR_SERVER_FLAGS, BigInt(o.serverFlags));
  w.u64(NBD_ATTR_TIMEOUT, BigInt(o.timeoutSec ?? DEFAULT_TIMEOUT_SEC));
  w.u64(
    NBD_ATTR_DEAD_CONN_TIMEOUT,
    BigInt(o.deadConnTimeoutSec ?? DEFAULT_DEAD_CONN_TIMEOUT_SEC),
  );
  w.u64(NBD_ATTR_CLIENT_FLAGS, BigInt(o.clientFlags ?? NBD_CFLAG_DESTROY_ON_DISCONNECT));
  if (o.backendIdentifier !== undefined) w.str(NBD_ATTR_BACKEND_IDENTIFIER, o.backendIdentifier);
  sockets(w, o.sockets);
  return w;
}

function sockets(w: AttrWriter, fds: number[]): void {
  w.nested(NBD_ATTR_SOCKETS, (s) => {
    for (const fd of fds) s.nested(NBD_SOCK_ITEM, (i) => i.u32(NBD_SOCK_FD, fd));
  });
}

function checkBlockSize(n: number, page: number): void {
  if (!Number.isInteger(n) || n < 512 || n > 65536 || (n & (n - 1)) !== 0) {
    throw new UsageError(`NBD block size ${n} is not a power of two from 512`);
  }
  // Linux 6.1 nbd_set_size() answers EINVAL past blk_validate_block_size()'s
  // PAGE_SIZE bound; say why here rather than pass on a bare EINVAL.
  if (n > page) {
    throw new UsageError(
      `NBD block size ${n} is larger than the page size (${page}), which Linux refuses`,
    );
  }
}

/**
 * The kernel's nbd generic netlink family. Requests need CAP_SYS_ADMIN
 * (GENL_ADMIN_PERM); without it they fail with EPERM.
 */
export class NbdKernel {
  readonly family: GenlFamily;
  #nl: NetlinkSocket;

  private constructor(nl: NetlinkSocket, family: GenlFamily) {
    this.#nl = nl;
    this.family = family;
  }

  /**
   * Open a generic netlink socket and resolve `nbd`, loading the module
   * when the family is missing.
   */
  static async open(
    opts: { loadModule?: ModuleLoader | false; log?: Logger } = {},
  ): Promise<NbdKernel> {
    const nl = NetlinkSocket.open(NETLINK_GENERIC);
    try {
      let family: GenlFamily;
      try {
        family = resolveFamily(nl, NBD_GENL_FAMILY_NAME);
      } catch (e) {
        if (!(e instanceof NetlinkError && e.is("ENOENT")) || opts.loadModule === false) {
          if (e instanceof NetlinkError && e.is("ENOENT")) {
            throw new OperationalError(
              "the kernel has no nbd driver (generic netlink family 'nbd' missing; modprobe nbd)",
            );
          }
          throw e;
        }
        opts.log?.debug("generic netlink family nbd missing: loading the nbd module");
        await (opts.loadModule ?? modprobe)("nbd");
        try {
          family = resolveFamily(nl, NBD_GENL_FAMILY_NAME);
        } catch (e2) {
          if (e2 instanceof NetlinkError && e2.is("ENOENT")) {
            throw new OperationalError(
              "nbd module loaded but generic netlink family 'nbd' is still missing",
            );
          }
          throw e2;
        }
      }
      return new NbdKernel(nl, family);
    } catch (e) {
      nl.close();
      throw e;
    }
  }

  #request(cmd: number, attrs: AttrWriter, call: string) {
    try {
      return genlRequest(this.#nl, this.family, cmd, attrs, { call });
    } catch (e) {
      if (e instanceof NetlinkError && e.is("EPERM")) {
        throw new NetlinkError(call, ERRNO.EPERM, "needs CAP_SYS_ADMIN (run as root)");
      }
      throw e;
    }
  }

  /**
   * NBD_CMD_CONNECT: attach sockets to a device; returns its index. With an
   * explicit index, EBUSY means that device is in use.
   */
  connect(o: ConnectOptions): number {
    const w = connectAttributes(o);
    const dev = o.index === undefined ? "nbd" : `nbd${o.index}`;
    const replies = this.#request(NBD_GENL_CMD.CONNECT, w, `connect ${dev}`);
    const index = replies.map((r) => r.attrs.u32(NBD_ATTR_INDEX)).find((i) => i !== undefined) ??
      o.index;
    if (index === undefined) {
      throw new SysError(`connect ${dev}`, ERRNO.EPROTO, "the kernel named no device");
    }
    return index;
  }

  /** NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC, shuts the sockets down, clears the device. */
  disconnect(index: number): void {
    this.#request(
      NBD_GENL_CMD.DISCONNECT,
      new AttrWriter().u32(NBD_ATTR_INDEX, index),
      `disconnect nbd${index}`,
    );
  }

  /**
   * NBD_CMD_RECONFIGURE a live device. With `sockets`, the kernel replaces
   * only sockets it has marked dead (6.1 drops ours silently otherwise): shut the old one
   * down first. The backend identifier must match the device's.
   */
  reconfigure(index: number, o: ReconfigureOptions): void {
    const w = new AttrWriter().u32(NBD_ATTR_INDEX, index);
    if (o.sizeBytes !== undefined) w.u64(NBD_ATTR_SIZE_BYTES, o.sizeBytes);
    if (o.timeoutSec !== undefined) w.u64(NBD_ATTR_TIMEOUT, BigInt(o.timeoutSec));
    if (o.deadConnTimeoutSec !== undefined) {
      w.u64(NBD_ATTR_DEAD_CONN_TIMEOUT, BigInt(o.deadConnTimeoutSec));
    }
    if (o.clientFlags !== undefined) w.u64(NBD_ATTR_CLIENT_FLAGS, BigInt(o.clientFlags));
    if (o.backendIdentifier !== undefined) w.str(NBD_ATTR_BACKEND_IDENTIFIER, o.backendIdentifier);
    if (o.sockets?.length) sockets(w, o.sockets);
    this.#request(NBD_GENL_CMD.RECONFIGURE, w, `reconfigure nbd${index}`);
  }

  /** NBD_CMD_STATUS: all devices, or one. */
  status(index?: number): NbdDeviceStatus[] {
    const w = new AttrWriter();
    if (index !== undefined) w.u32(NBD_ATTR_INDEX, index);
    const out: NbdDeviceStatus[] = [];
    for (
      const r of this.#request(
        NBD_GENL_CMD.STATUS,
        w,
        index === undefined ? "status" : `status nbd${index}`,
      )
    ) {
      for (const list of r.attrs.nestedAll(NBD_ATTR_DEVICE_LIST)) {
        for (const item of list.nestedAll(NBD_DEVICE_ITEM)) out.push(parseDeviceItem(item));
      }
    }
    return out;
  }

  close(): void {
    this.#nl.close();
  }
}

function parseDeviceItem(a: Attrs): NbdDeviceStatus {
  const index = a.u32(NBD_DEVICE_INDEX);
  if (index === undefined) {
    throw new SysError("status", ERRNO.EPROTO, "device item without NBD_DEVICE_INDEX");
  }
  return { index, connected: (a.u8(NBD_DEVICE_CONNECTED) ?? 0) !== 0 };
}

/**
 * Listens on the nbd multicast group for NBD_CMD_LINK_DEAD: the kernel
 * marked a device's socket dead on its own (request timeout, receive error)
 * and waits DEAD_CONN_TIMEOUT for a RECONFIGURE. It is not sent for
 * NBD_CMD_DISCONNECT, which is how a daemon tells "heal" from "go away".
 * Polled without blocking (`deadIndexes()`), so it needs no event loop hook.
 *
 * @example
 * ```ts
 * const watch = NbdLinkWatch.open(nbd.family);
 * if (watch.deadIndexes().has(0)) await takeOverDevice(nbd, device, { log, index: 0, backendIdentifier });
 * ```
 */
export class NbdLinkWatch {
  #nl: NetlinkSocket;
  #familyId: number;

  private constructor(nl: NetlinkSocket, familyId: number) {
    this.#nl = nl;
    this.#familyId = familyId;
  }

  static open(family: GenlFamily): NbdLinkWatch {
    const group = family.mcastGroups.get(NBD_GENL_MCAST_GROUP_NAME);
    if (group === undefined) {
      throw new SysError(
        "nbd multicast group",
        ERRNO.ENOENT,
        `${NBD_GENL_MCAST_GROUP_NAME} missing`,
      );
    }
    const nl = NetlinkSocket.open(NETLINK_GENERIC);
    try {
      nl.joinGroup(group);
    } catch (e) {
      nl.close();
      throw e;
    }
    return new NbdLinkWatch(nl, family.id);
  }

  /** Device indexes reported dead since the last call. */
  deadIndexes(): Set<number> {
    return linkDeadIndexes(this.#nl.drain(), this.#familyId);
  }

  close(): void {
    this.#nl.close();
  }
}

/**
 * The device indexes named by NBD_CMD_LINK_DEAD notifications among
 * `messages` (other families, commands and malformed ones are skipped).
 *
 * @example
 * ```ts
 * linkDeadIndexes(nl.drain(), nbd.family.id); // Set { 0 }
 * ```
 */
export function linkDeadIndexes(messages: NlMessage[], familyId: number): Set<number> {
  const out = new Set<number>();
  for (const m of messages) {
    if (m.type !== familyId) continue;
    try {
      const g = decodeGenl(m.payload);
      const index = g.attrs.u32(NBD_ATTR_INDEX);
      if (g.cmd === NBD_GENL_CMD.LINK_DEAD && index !== undefined) out.add(index);
    } catch {
      // a malformed notification is no notification
    }
  }
  return out;
}
