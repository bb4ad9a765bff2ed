/**
 * The `isboot ibft --json` document (README, "isboot ibft") and its inverse for
 * `isboot ibft encode`. Field order follows README; the documented
 * extras (`control`, `nics[].global`, `targets[].radiusChap`,
 * `targets[].radiusReverseChap`) come after the §3 fields of their object.
 *
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { ORIGINS } from "./constants.ts";
import type {
  ChapType,
  IbftControl,
  IbftHeader,
  IbftInitiator,
  IbftNic,
  IbftTable,
  IbftTarget,
  LoadedIbft,
  Origin,
} from "./model.ts";

/** What secrets print as without --show-secrets. */
export const REDACTED = "<redacted>";

/** Options for {@link ibftToJson}. */
export interface JsonOptions {
  /** Print CHAP secrets instead of `<redacted>`. */
  showSecrets?: boolean;
}

/**
 * The JSON document for a loaded table: `{ source, header, control,
 * initiator, nics, targets }`, secrets redacted unless `showSecrets`.
 *
 * @example
 * ```ts
 * console.log(JSON.stringify(ibftToJson(loaded), null, 2));
 * ```
 */
export function ibftToJson(loaded: LoadedIbft, opts: JsonOptions = {}): Record<string, unknown> {
  const t = loaded.table;
  const secret = (s: string | null) => (s === null || opts.showSecrets ? s : REDACTED);
  const h = t.header;
  const i = t.initiator;
  return {
    source: loaded.source,
    header: {
      signature: h.signature,
      length: h.length,
      revision: h.revision,
      checksumValid: h.checksumValid,
      oemId: h.oemId,
      oemTableId: h.oemTableId,
    },
    control: t.control === null ? null : { bootFailover: t.control.bootFailover },
    initiator: i === null ? null : {
      name: i.name,
      valid: i.valid,
      bootSelected: i.bootSelected,
      isnsServer: i.isnsServer,
      slpServer: i.slpServer,
      primaryRadius: i.primaryRadius,
      secondaryRadius: i.secondaryRadius,
    },
    nics: t.nics.map((n) => ({
      index: n.index,
      valid: n.valid,
      bootSelected: n.bootSelected,
      ip: n.ip,
      prefixLength: n.prefixLength,
      origin: n.origin,
      gateway: n.gateway,
      primaryDns: n.primaryDns,
      secondaryDns: n.secondaryDns,
      dhcpServer: n.dhcpServer,
      vlan: n.vlan,
      mac: n.mac,
      pciBdf: n.pciBdf,
      hostname: n.hostname,
      global: n.global,
    })),
    targets: t.targets.map((x) => ({
      index: x.index,
      valid: x.valid,
      bootSelected: x.bootSelected,
      ip: x.ip,
      port: x.port,
      lun: x.lun,
      lunRaw: x.lunRaw,
      chap: x.chap,
      nicIndex: x.nicIndex,
      name: x.name,
      chapName: x.chapName,
      chapSecret: secret(x.chapSecret),
      reverseChapName: x.reverseChapName,
      reverseChapSecret: secret(x.reverseChapSecret),
      radiusChap: x.radiusChap,
      radiusReverseChap: x.radiusReverseChap,
    })),
  };
}

/** Typed reads from untrusted JSON, each error naming the JSON path. */
class Fields {
  readonly obj: Record<string, unknown>;
  readonly path: string;

  constructor(v: unknown, path: string) {
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new InvalidInputError(`ibft JSON: ${path}: expected an object`);
    }
    this.obj = v as Record<string, unknown>;
    this.path = path;
  }

  #fail(key: string, what: string): never {
    throw new InvalidInputError(`ibft JSON: ${this.path}.${key}: expected ${what}`);
  }

  #get(key: string, fallback?: unknown): unknown {
    if (Object.hasOwn(this.obj, key)) return this.obj[key];
    if (fallback !== undefined) return fallback;
    this.#fail(key, "a value (missing)");
  }

  bool(key: string, fallback?: boolean): boolean {
    const v = this.#get(key, fallback);
    if (typeof v !== "boolean") this.#fail(key, "true or false");
    return v;
  }

  int(key: string, max: number, fallback?: number): number {
    const v = this.#get(key, fallback);
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
      this.#fail(key, `an integer 0..${max}`);
    }
    return v;
  }

  intOrNull(key: string, max: number): number | null {
    return this.#get(key, null) === null ? null : this.int(key, max);
  }

  str(key: string, fallback?: string): string {
    const v = this.#get(key, fallback);
    if (typeof v !== "string") this.#fail(key, "a string");
    return v;
  }

  strOrNull(key: string): string | null {
    const v = this.#get(key, null);
    if (v !== null && typeof v !== "string") this.#fail(key, "a string or null");
    return v;
  }

  secret(key: string): string | null {
    const v = this.strOrNull(key);
    if (v === REDACTED) {
      throw new InvalidInputError(
        `ibft JSON: ${this.path}.${key}: is "${REDACTED}"; print the JSON with --show-secrets`,
      );
    }
    return v;
  }

  oneOf<T extends string>(key: string, values: readonly T[]): T {
    const v = this.#get(key);
    if (typeof v !== "string" || !(values as readonly string[]).includes(v)) {
      this.#fail(key, `one of ${values.join(", ")}`);
    }
    return v as T;
  }

  list(key: string): unknown[] {
    const v = this.#get(key, []);
    if (!Array.isArray(v)) this.#fail(key, "an array");
    return v;
  }

  value(key: string): unknown {
    return this.#get(key, null);
  }
}

/**
 * The model from a JSON document as `isboot ibft --json --show-secrets`
 * prints it. `source`, `header.length` and `header.checksumValid` are
 * ignored (the encoder computes them); `header` fields, `control` and the
 * extra flags default to what iPXE writes when missing.
 *
 * @throws InvalidInputError naming the JSON path that is wrong.
 * @example
 * ```ts
 * const table = ibftFromJson(JSON.parse(await Deno.readTextFile("ibft.json")));
 * ```
 */
export function ibftFromJson(doc: unknown): IbftTable {
  const top = new Fields(doc, "$");
  const hv = top.value("header");
  const h = new Fields(hv ?? {}, "$.header");
  const header: IbftHeader = {
    signature: h.str("signature", "iBFT"),
    length: null,
    revision: h.int("revision", 255, 1),
    checksumValid: null,
    oemId: h.str("oemId", ""),
    oemTableId: h.str("oemTableId", ""),
  };
  const cv = top.value("control");
  let control: IbftControl | null = null;
  if (cv !== null) control = { bootFailover: new Fields(cv, "$.control").bool("bootFailover") };
  const iv = top.value("initiator");
  let initiator: IbftInitiator | null = null;
  if (iv !== null) {
    const f = new Fields(iv, "$.initiator");
    initiator = {
      name: f.strOrNull("name"),
      valid: f.bool("valid"),
      bootSelected: f.bool("bootSelected"),
      isnsServer: f.strOrNull("isnsServer"),
      slpServer: f.strOrNull("slpServer"),
      primaryRadius: f.strOrNull("primaryRadius"),
      secondaryRadius: f.strOrNull("secondaryRadius"),
    };
  }
  const nics: IbftNic[] = top.list("nics").map((v, k) => {
    const f = new Fields(v, `$.nics[${k}]`);
    return {
      index: f.int("index", 255),
      valid: f.bool("valid"),
      bootSelected: f.bool("bootSelected"),
      global: f.bool("global", false),
      ip: f.strOrNull("ip"),
      prefixLength: f.int("prefixLength", 128),
      origin: f.oneOf<Origin>("origin", ORIGINS),
      gateway: f.strOrNull("gateway"),
      primaryDns: f.strOrNull("primaryDns"),
      secondaryDns: f.strOrNull("secondaryDns"),
      dhcpServer: f.strOrNull("dhcpServer"),
      vlan: f.int("vlan", 0xfff),
      mac: f.str("mac"),
      pciBdf: f.strOrNull("pciBdf"),
      hostname: f.strOrNull("hostname"),
    };
  });
  const targets: IbftTarget[] = top.list("targets").map((v, k) => {
    const f = new Fields(v, `$.targets[${k}]`);
    return {
      index: f.int("index", 255),
      valid: f.bool("valid"),
      bootSelected: f.bool("bootSelected"),
      radiusChap: f.bool("radiusChap", false),
      radiusReverseChap: f.bool("radiusReverseChap", false),
      ip: f.strOrNull("ip"),
      port: f.int("port", 0xffff),
      lun: f.intOrNull("lun", 0x3fff),
      lunRaw: f.strOrNull("lunRaw") ?? "",
      chap: f.oneOf<ChapType>("chap", ["none", "chap", "mutual"]),
      nicIndex: f.int("nicIndex", 255),
      name: f.strOrNull("name"),
      chapName: f.strOrNull("chapName"),
      chapSecret: f.secret("chapSecret"),
      reverseChapName: f.strOrNull("reverseChapName"),
      reverseChapSecret: f.secret("reverseChapSecret"),
    };
  });
  return { header, control, initiator, nics, targets };
}
