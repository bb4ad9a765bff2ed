/**
 * man/isboot.8 must keep up with the code. Checked against the code itself,
 * not against a copy of it:
 * - every subcommand in src/cli/commands.ts has a subsection under COMMANDS
 *   and a line in SYNOPSIS;
 * - every option of its parseArgs table (Command.options, plus the
 *   COMMON_OPTIONS every command has) is the tag of an entry (.TP/.TQ) in
 *   that subsection or under COMMON OPTIONS, long and short name;
 * - every kernel command line name parseBootCmdline recognises
 *   (KERNEL_CMDLINE_OPTIONS, which its switches are exhaustive over) is the
 *   tag of an entry under KERNEL COMMAND LINE;
 * - every ISBOOT_* variable named in src/ is an entry under ENVIRONMENT;
 * - EXIT STATUS has an entry for each code of EXIT (src/errors.ts) and no other;
 * - .TH carries VERSION;
 * - groff renders the page without a warning (skipped, loudly, without groff).
 */
import assert from "node:assert/strict";
import { COMMANDS } from "../../src/cli/commands.ts";
import { COMMON_OPTIONS } from "../../src/cli/args.ts";
import { KERNEL_CMDLINE_OPTIONS } from "../../src/boot/cmdline.ts";
import { EXIT } from "../../src/errors.ts";
import { VERSION } from "../../src/version.ts";

const ROOT = new URL("../../", import.meta.url);
const PAGE = new URL("man/isboot.8", ROOT);
const source = await Deno.readTextFile(PAGE);

/** A section or subsection: its text with the markup removed, and its entry tags. */
interface Part {
  text: string;
  tags: string[];
}
interface Section extends Part {
  subsections: Map<string, Part>;
}

const SPECIAL: Record<string, string> = {
  dq: '"',
  aq: "'",
  lq: '"',
  rq: '"',
  oq: "'",
  cq: "'",
  en: "-",
  em: "-",
  hy: "-",
  mi: "-",
  ti: "~",
  ha: "^",
  rs: "\\",
};

/** Inline escapes: fonts dropped, \- and special characters as plain text. */
function unescape(s: string): string {
  return s.replace(
    /\\(?:f(?:\[[^\]]*\]|\(..|.)|\((..)|\[([^\]]*)\]|\*(?:\(..|\[[^\]]*\]|.)|(.))/g,
    (_m, two?: string, long?: string, one?: string) => {
      const name = two ?? long;
      if (name !== undefined) return SPECIAL[name] ?? " ";
      if (one === undefined) return ""; // a font change or a string
      if (one === "e" || one === "\\") return "\\";
      if (one === " " || one === "~") return " ";
      if ("&:c|^%".includes(one)) return "";
      return one; // \- \. and the like
    },
  );
}

/** A request's arguments: space-separated, "double quoted" when they hold spaces. */
function splitArgs(rest: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < rest.length) {
    while (rest[i] === " " || rest[i] === "\t") i++;
    if (i >= rest.length) break;
    let arg = "";
    if (rest[i] === '"') {
      i++;
      while (i < rest.length) {
        if (rest[i] === '"' && rest[i + 1] === '"') {
          arg += '"';
          i += 2;
        } else if (rest[i] === '"') {
          i++;
          break;
        } else arg += rest[i++];
      }
    } else {
      while (i < rest.length && rest[i] !== " " && rest[i] !== "\t") arg += rest[i++];
    }
    args.push(arg);
  }
  return args;
}

/**
 * One input line as text: font macros give their arguments (alternating ones
 * joined without spaces, as troff sets them), other requests and comments
 * nothing.
 */
function lineText(line: string): { request: string | null; text: string } {
  const m = /^[.'](\S+)\s*(.*)$/.exec(line);
  if (!m) return { request: null, text: unescape(line) };
  const [, request, rest] = m;
  if (request.startsWith('\\"')) return { request: "comment", text: "" };
  const args = splitArgs(rest);
  if (/^(BR|RB|IR|RI|BI|IB)$/.test(request)) return { request, text: unescape(args.join("")) };
  if (/^(B|I|SM|SB|SH|SS)$/.test(request)) return { request, text: unescape(args.join(" ")) };
  return { request, text: "" };
}

/** The page as sections (.SH) holding subsections (.SS), each with its text and tags. */
function parsePage(src: string): Map<string, Section> {
  const sections = new Map<string, Section>();
  let section: Section | null = null;
  let sub: Part | null = null;
  let tagNext = false;
  for (const line of src.split("\n")) {
    const { request, text } = lineText(line);
    if (request === "SH") {
      section = { text: "", tags: [], subsections: new Map() };
      sections.set(text.trim(), section);
      sub = null;
      continue;
    }
    if (request === "SS" && section) {
      sub = { text: "", tags: [] };
      section.subsections.set(text.trim(), sub);
      continue;
    }
    if (request === "TP" || request === "TQ") {
      tagNext = true;
      continue;
    }
    if (request === "comment" || !section) continue;
    if (tagNext && (request === null || text !== "")) {
      section.tags.push(text);
      sub?.tags.push(text);
      tagNext = false;
    }
    section.text += text + "\n";
    if (sub) sub.text += text + "\n";
  }
  return sections;
}

const page = parsePage(source);

function section(name: string): Section {
  const s = page.get(name);
  assert.ok(s, `man/isboot.8 has no section ${name} (has: ${[...page.keys()].join(", ")})`);
  return s;
}

/** Whether `text` has `word` as a whole token (not inside a longer option or name). */
function hasToken(text: string, word: string, after = "[\\w-]"): boolean {
  const esc = word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\w.-])${esc}(?!${after})`, "m").test(text);
}

Deno.test("man page: the sections of isboot(8) are there", () => {
  for (
    const name of [
      "NAME",
      "SYNOPSIS",
      "DESCRIPTION",
      "COMMANDS",
      "TARGET URI",
      "COMMON OPTIONS",
      "KERNEL COMMAND LINE",
      "ENVIRONMENT",
      "FILES",
      "EXIT STATUS",
      "SECURITY",
      "EXAMPLES",
      "SEE ALSO",
    ]
  ) section(name);
  assert.match(
    source,
    new RegExp(`^\\.TH ISBOOT 8 \\S+ "isboot ${VERSION.replaceAll(".", "\\.")}"`, "m"),
    ".TH names another version than src/version.ts",
  );
  for (const ref of ["dracut.cmdline(7)", "iscsistart(8)", "nbd-client(8)", "qemu-nbd(8)"]) {
    assert.ok(section("SEE ALSO").text.includes(ref), `SEE ALSO lacks ${ref}`);
  }
});

Deno.test("man page: every command has a subsection and a SYNOPSIS line", () => {
  const commands = section("COMMANDS").subsections;
  const missing = Object.keys(COMMANDS).filter((c) => !commands.has(`isboot ${c}`));
  assert.deepEqual(missing, [], `COMMANDS lacks a subsection .SS "isboot NAME" for these`);
  const synopsis = section("SYNOPSIS").text;
  const notInSynopsis = Object.keys(COMMANDS).filter((c) => !hasToken(synopsis, `isboot ${c}`));
  assert.deepEqual(notInSynopsis, [], "SYNOPSIS lacks these commands");
});

Deno.test("man page: every option of every command is documented", () => {
  const common = section("COMMON OPTIONS").tags.join("\n");
  const missing: string[] = [];
  for (const [name, cmd] of Object.entries(COMMANDS)) {
    const own = section("COMMANDS").subsections.get(`isboot ${name}`)?.tags.join("\n") ?? "";
    const table: Record<string, { type: string; short?: string }> = {
      ...COMMON_OPTIONS,
      ...cmd.options,
    };
    for (const [long, def] of Object.entries(table)) {
      for (const flag of [`--${long}`, ...(def.short ? [`-${def.short}`] : [])]) {
        if (!hasToken(own, flag) && !hasToken(common, flag)) missing.push(`isboot ${name} ${flag}`);
      }
    }
  }
  assert.deepEqual(
    missing,
    [],
    "man/isboot.8 lacks an entry (.TP tag) for these options, in the command's subsection or under COMMON OPTIONS",
  );
});

Deno.test("man page: every kernel command line option is documented", () => {
  assert.ok(KERNEL_CMDLINE_OPTIONS.length > 10, "KERNEL_CMDLINE_OPTIONS looks empty");
  const tags = section("KERNEL COMMAND LINE").tags.join("\n");
  const missing = KERNEL_CMDLINE_OPTIONS.filter((o) => !hasToken(tags, o, "[\\w.-]"));
  assert.deepEqual(
    missing,
    [],
    "KERNEL COMMAND LINE lacks an entry (.TP tag) for these options parseBootCmdline recognises",
  );
});

Deno.test("man page: every ISBOOT_* environment variable of src/ is documented", async () => {
  const names = new Set<string>();
  const walk = async (dir: URL) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(new URL(`${e.name}/`, dir));
      else if (e.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(new URL(e.name, dir));
        for (const m of text.matchAll(/["'`](ISBOOT_[A-Z0-9_]+)["'`]/g)) names.add(m[1]);
      }
    }
  };
  await walk(new URL("src/", ROOT));
  assert.ok(names.has("ISBOOT_CHAP_SECRET"), "the scan of src/ found no ISBOOT_CHAP_SECRET");
  const tags = section("ENVIRONMENT").tags.join("\n");
  const missing = [...names].sort().filter((n) => !hasToken(tags, n));
  assert.deepEqual(missing, [], "ENVIRONMENT lacks an entry for these variables");
});

Deno.test("man page: EXIT STATUS lists exactly the exit codes of src/errors.ts", () => {
  const tags = section("EXIT STATUS").tags.map((t) => t.trim()).sort();
  const codes = Object.values(EXIT).map(String).sort();
  assert.deepEqual(tags, codes);
});

const groff = await (async () => {
  try {
    const r = await new Deno.Command("groff", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return r.success;
  } catch {
    return false;
  }
})();
if (!groff) {
  console.error(
    "\n*** man page: groff is not installed: NOT checking that man/isboot.8 renders without warnings" +
      " (apt-get install groff-base) ***\n",
  );
}

Deno.test({
  name: "man page: groff renders it without a warning",
  ignore: !groff,
  async fn() {
    for (const device of ["utf8", "ascii"]) {
      const r = await new Deno.Command("groff", {
        args: ["-man", `-T${device}`, "-ww", "-z", PAGE.pathname],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(r.stderr);
      assert.equal(stderr, "", `groff -T${device} warned`);
      assert.equal(r.code, 0);
    }
  },
});
