/**
 * Kernel NBD devices over generic netlink (include/uapi/linux/nbd-netlink.h,
 * drivers/block/nbd.c): connect a socket to /dev/nbdN, disconnect, query,
 * and reconfigure a live device (the takeover path, docs/kernel.md).
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
import type { BlockDevice } from "../blockdev.ts";
import { OperationalError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FdStream } from "../sys/reactor.ts";
import { pageSize } from "../sys/process.ts";
import { closeFd, socketPair } from "../sys/socket.ts";
import { IoBudget } from "./buffers.ts";
import { transmissionFlags } from "./export.ts";
import { type NbdCounters, newCounters, serveTransmission } from "./transmission.ts";
import type { ByteStream } from "./stream.ts";
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
/** Commands. */
export const NBD_CMD_CONNECT = 1;
export const NBD_CMD_DISCONNECT = 2;
export const NBD_CMD_RECONFIGURE = 3;
export const NBD_CMD_LINK_DEAD = 4;
export const NBD_CMD_STATUS = 5;
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
 * Request timeout a takeover sets while the old daemon drains: the few
 * requests the kernel writes into the old socket after its last read are
 * resent this soon, not at the next 30 s re-arm.
 */
export const TAKEOVER_TIMEOUT_SEC = 3;
/** A draining daemon whose in-flight requests have not finished by then lets go anyway. */
export const RELEASE_FORCE_MS = 15_000;

/** Runs `modprobe NAME`; injectable so tests and the boot path can choose. */
export type ModuleLoader = (name: string) => Promise<void>;

/** Load (or, with `remove`, unload) a module with the system's modprobe (kmod or busybox). */
export async function modprobe(name: string, o: { remove?: boolean } = {}): Promise<void> {
  let lastError = "";
  const args = o.remove ? ["-r", name] : [name];
  for (const cmd of ["modprobe", "/sbin/modprobe", "/usr/sbin/modprobe"]) {
    try {
      const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" })
        .output();
      if (out.success) return;
      lastError = new TextDecoder().decode(out.stderr).trim().split("\n")[0] ?? `exit ${out.code}`;
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      lastError = "modprobe not found";
    }
  }
  throw new OperationalError(`modprobe ${args.join(" ")}: ${lastError}`);
}

/**
 * Parse a device argument: `/dev/nbd3`, `nbd3` or `3` to 3.
 *
 * @example
 * ```ts
 * parseNbdDevice("/dev/nbd0"); // 0
 * ```
 */
export function parseNbdDevice(dev: string): number {
  const m = /^(?:\/dev\/)?(?:nbd)?(\d{1,6})$/.exec(dev);
  if (!m || (!dev.includes("nbd") && dev.startsWith("/"))) {
    throw new UsageError(`'${dev}' is not an NBD device (expected /dev/nbdN)`);
  }
  return Number.parseInt(m[1], 10);
}

/** /dev/nbdN for an index. */
export function nbdDevicePath(index: number): string {
  return `/dev/nbd${index}`;
}

/** What sysfs says about /sys/block/nbdN. */
export interface NbdSysfsInfo {
  index: number;
  /** False when /sys/block/nbdN does not exist. */
  exists: boolean;
  sizeBytes: bigint;
  /** /sys/block/nbdN/backend, when set at connect. */
  backend?: string;
  /** /sys/block/nbdN/pid: the process that connected it, when connected. */
  pid?: number;
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

/**
 * Read /sys/block/nbdN: size, backend identifier, connecting pid.
 *
 * @example
 * ```ts
 * const info = readNbdSysfs(0);
 * if (info.backend === wanted) ...
 * ```
 */
export function readNbdSysfs(index: number, sysRoot = "/sys"): NbdSysfsInfo {
  const dir = `${sysRoot}/block/nbd${index}`;
  const size = readText(`${dir}/size`);
  if (size === undefined) return { index, exists: false, sizeBytes: 0n };
  const pid = readText(`${dir}/pid`);
  const backend = readText(`${dir}/backend`);
  return {
    index,
    exists: true,
    sizeBytes: /^\d+$/.test(size) ? BigInt(size) * 512n : 0n,
    backend: backend === undefined || backend === "" ? undefined : backend,
    pid: pid !== undefined && /^\d+$/.test(pid) ? Number(pid) : undefined,
  };
}

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
 * The block size to give the kernel for a device of `logical`-byte blocks:
 * at most the page size, because Linux 6.1 refuses an NBD block size above
 * PAGE_SIZE (nbd_set_size() → blk_validate_block_size()). A LUN with larger
 * blocks (8 KiB, 64 KiB on a 4 KiB-page machine) is still served: the kernel
 * then sends requests that cover part of a LUN block, and the NBD server
 * turns those into read-modify-writes of whole blocks, serialised per
 * export (docs/nbd.md), so the device is correct, only slower for small
 * writes. Clamping for every kernel, rather than asking which one refuses,
 * keeps the device the same wherever it boots.
 *
 * @example
 * ```ts
 * kernelBlockSize(8192, 4096); // 4096
 * kernelBlockSize(512, 4096); // 512
 * ```
 */
export function kernelBlockSize(logical: number, page: number): number {
  return Math.min(logical, page);
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
    const replies = this.#request(NBD_CMD_CONNECT, w, `connect ${dev}`);
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
      NBD_CMD_DISCONNECT,
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
    if (o.timeoutSec !== undefined) w.u64(NBD_ATTR_TIMEOUT, BigInt(o.timeoutSec));
    if (o.deadConnTimeoutSec !== undefined) {
      w.u64(NBD_ATTR_DEAD_CONN_TIMEOUT, BigInt(o.deadConnTimeoutSec));
    }
    if (o.clientFlags !== undefined) w.u64(NBD_ATTR_CLIENT_FLAGS, BigInt(o.clientFlags));
    if (o.backendIdentifier !== undefined) w.str(NBD_ATTR_BACKEND_IDENTIFIER, o.backendIdentifier);
    if (o.sockets?.length) sockets(w, o.sockets);
    this.#request(NBD_CMD_RECONFIGURE, w, `reconfigure nbd${index}`);
  }

  /** NBD_CMD_STATUS: all devices, or one. */
  status(index?: number): NbdDeviceStatus[] {
    const w = new AttrWriter();
    if (index !== undefined) w.u32(NBD_ATTR_INDEX, index);
    const out: NbdDeviceStatus[] = [];
    for (
      const r of this.#request(
        NBD_CMD_STATUS,
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
      if (g.cmd === NBD_CMD_LINK_DEAD && index !== undefined) out.add(index);
    } catch {
      // a malformed notification is no notification
    }
  }
  return out;
}

/** Options of {@link attachDevice}. */
export interface AttachOptions {
  log: Logger;
  /** /dev/nbdN to use; omitted: the first free device. */
  index?: number;
  /** Written to /sys/block/nbdN/backend; RECONFIGURE (takeover) must match it. */
  backendIdentifier: string;
  /** Sockets (kernel queues) to the same device, 1..16 (default 1). */
  connections?: number;
  timeoutSec?: number;
  deadConnTimeoutSec?: number;
  /** Counters the NBD server updates (for `isboot status`). */
  counters?: NbdCounters;
  /** Export the device read-only even if it is writable. */
  readOnly?: boolean;
}

/** A device attached by {@link attachDevice} and the server feeding it. */
export interface KernelAttachment {
  index: number;
  /** "/dev/nbdN" */
  device: string;
  /** NBD transmission flags given to the kernel. */
  flags: number;
  counters: NbdCounters;
  /** Resolves when every connection has ended (NBD_CMD_DISC, disconnect, or socket death). */
  done: Promise<void>;
  /** NBD_CMD_DISCONNECT through netlink; `done` resolves after. */
  disconnect(): void;
  /**
   * Let go of the device without disconnecting it (the takeover hand-over,
   * docs/kernel.md): drain — stop reading at a request boundary, answer every
   * request read — then shut our socket ends down; the kernel marks them
   * dead and holds requests for DEAD_CONN_TIMEOUT, waiting for a new
   * daemon's RECONFIGURE. `done` resolves after. Requests still unanswered
   * after RELEASE_FORCE_MS are abandoned (the kernel resends them).
   */
  release(): void;
}

/**
 * Serve `device` to a kernel NBD device: make a socketpair per connection,
 * serve our ends in transmission mode (no handshake), and give the other
 * ends to the kernel with NBD_CMD_CONNECT. Our copies of the kernel's ends
 * are closed once the kernel holds them.
 *
 * @example
 * ```ts
 * const nbd = await NbdKernel.open({ log });
 * const a = await attachDevice(nbd, device, { log, backendIdentifier: "iqn.2026-11.test:disk1/1" });
 * console.log(a.device);   // /dev/nbd0
 * await a.done;            // until `isboot detach /dev/nbd0`
 * ```
 */
export function attachDevice(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions,
): Promise<KernelAttachment> {
  const page = pageSize();
  const blockSize = kernelBlockSize(device.blockSize, page);
  if (blockSize !== device.blockSize) {
    o.log.warn(
      `block size ${device.blockSize} is larger than the page size (${page}), which Linux refuses` +
        ` for NBD: /dev/nbd uses ${blockSize}-byte blocks, and writes of less than` +
        ` ${device.blockSize} bytes become read-modify-writes`,
    );
  }
  return hookUp(nbd, device, o, (theirs, flags) =>
    nbd.connect({
      index: o.index,
      sockets: theirs,
      sizeBytes: device.size,
      blockSize,
      serverFlags: flags,
      timeoutSec: o.timeoutSec,
      deadConnTimeoutSec: o.deadConnTimeoutSec,
      backendIdentifier: o.backendIdentifier,
    }));
}

/**
 * Take over a live device whose previous server is gone (crashed, or told
 * to `release`): serve new socketpairs and hand them to the kernel with
 * NBD_CMD_RECONFIGURE, which puts them in place of the sockets it marked
 * dead. The backend identifier must match the device's. Call it only once
 * the old socket is dead (its NBD_CMD_LINK_DEAD was seen, or its process
 * died): with no dead socket, Linux 6.1 drops the new one and still answers
 * success. ENOSPC, should a kernel answer it, is retried for up to `waitDeadMs`.
 *
 * @example
 * ```ts
 * const a = await takeOverDevice(nbd, device, { log, index: 0, backendIdentifier: "iqn.2026-11.test:disk1/1" });
 * ```
 */
export function takeOverDevice(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions & { index: number; waitDeadMs?: number },
): Promise<KernelAttachment> {
  return hookUp(nbd, device, o, async (theirs) => {
    const deadline = Date.now() + (o.waitDeadMs ?? 10_000);
    for (;;) {
      try {
        nbd.reconfigure(o.index, {
          sockets: theirs,
          backendIdentifier: o.backendIdentifier,
          timeoutSec: o.timeoutSec,
          deadConnTimeoutSec: o.deadConnTimeoutSec,
        });
        return o.index;
      } catch (e) {
        if (!(e instanceof SysError && e.is("ENOSPC")) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
}

/**
 * Make the socketpairs, let `kernelCall` hand the kernel's ends over (it
 * returns the device index), then serve our ends in transmission mode.
 */
async function hookUp(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions,
  kernelCall: (theirs: number[], flags: number) => number | Promise<number>,
): Promise<KernelAttachment> {
  const n = o.connections ?? 1;
  if (!Number.isInteger(n) || n < 1 || n > 16) {
    throw new UsageError(`connections ${n}: expected 1..16`);
  }
  const flags = transmissionFlags(device, { readOnly: o.readOnly });
  const counters = o.counters ?? newCounters();
  const ours: number[] = [];
  const theirs: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const [a, b] = socketPair();
      ours.push(a);
      theirs.push(b);
    }
  } catch (e) {
    for (const fd of [...ours, ...theirs]) closeFd(fd);
    throw e;
  }
  let index: number;
  try {
    index = await kernelCall(theirs, flags);
  } catch (e) {
    for (const fd of ours) closeFd(fd);
    throw e;
  } finally {
    // The kernel took its own references (sockfd_lookup); ours are not needed.
    for (const fd of theirs) closeFd(fd);
  }
  const drain = new AbortController();
  const finished = ours.map(() => false);
  const streams: ByteStream[] = [];
  const letGo: Promise<void>[] = [];
  for (const [i, fd] of ours.entries()) {
    const s = new FdStream(fd);
    let gone!: () => void;
    letGo.push(new Promise<void>((r) => (gone = r)));
    streams.push({
      read: (into) => s.read(into),
      write: (data) => s.write(data),
      close() {
        if (finished[i]) return;
        finished[i] = true;
        if (!drain.signal.aborted || s.closed) {
          s.close();
          gone();
          return;
        }
        // The end of a drain: half-close (shutdown SHUT_WR; the replies are
        // out, the server drained its writer before closing) and keep
        // reading, discarding, until the kernel shuts its end. So the
        // kernel's receiver, not a failed send, is what marks the socket
        // dead: a receiver still running after a new socket was put in place
        // would mark the NEW socket dead (6.1 recv_work() looks the socket up
        // by index). What we discard the kernel resends when it times out.
        s.cancelRead(); // the server's own read, if one is pending
        s.shutdownWrite();
        const force = setTimeout(() => s.close(), RELEASE_FORCE_MS);
        const scratch = new Uint8Array(65536);
        void (async () => {
          while ((await s.read(scratch)) !== null);
        })().finally(() => {
          clearTimeout(force);
          s.close();
          gone();
        });
      },
    });
  }
  const label = `nbd${index}`;
  const budget = new IoBudget(); // one memory bound for all of the device's sockets
  const done = Promise.all(
    streams.map((s, i) =>
      serveTransmission(s, device, {
        log: o.log,
        counters,
        flags,
        label: n > 1 ? `${label}.${i}` : label,
        drain: drain.signal,
        budget,
      })
    ),
  ).then(() => Promise.all(letGo)).then(() => {});
  return {
    index,
    device: nbdDevicePath(index),
    flags,
    counters,
    done,
    disconnect: () => nbd.disconnect(index),
    release: () => {
      if (drain.signal.aborted) return;
      drain.abort();
      const force = setTimeout(() => {
        o.log.warn(`${label}: requests still in flight after the drain: letting go anyway`);
        for (const s of streams) s.close();
      }, RELEASE_FORCE_MS);
      void done.finally(() => clearTimeout(force));
    },
  };
}
