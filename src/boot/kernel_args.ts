/**
 * The kernel command line split into arguments exactly as the kernel's own
 * `next_arg()` does (lib/cmdline.c / kernel/params.c): arguments are
 * separated by unquoted whitespace, a double quote toggles quoting, and the
 * quotes around a value (`opt="a b"`) or a whole argument (`"a b"`) are
 * removed. Everything after a lone `--` belongs to init and is left out.
 * @module
 */

/** One `name[=value]` argument; value is null when there was no `=`. */
export interface KernelArg {
  readonly name: string;
  readonly value: string | null;
}

const SPACE = /[ \t\n\v\f\r]/;

/**
 * Split a command line exactly as the kernel's `next_arg()` does.
 *
 * @example
 * ```ts
 * splitKernelCmdline('a="x y" b'); // [{name:"a",value:"x y"},{name:"b",value:null}]
 * ```
 */
export function splitKernelCmdline(line: string): KernelArg[] {
  const out: KernelArg[] = [];
  let s = line.replace(/^[ \t\n\v\f\r]+/, "");
  while (s.length > 0) {
    let quoted = false;
    let inQuote = false;
    let start = 0;
    if (s[0] === '"') {
      start = 1;
      inQuote = true;
      quoted = true;
    }
    let i = start;
    let equals = -1;
    for (; i < s.length; i++) {
      if (SPACE.test(s[i]) && !inQuote) break;
      // The kernel keeps `equals == 0` as "not found", so an '=' first in the argument is part of the name.
      if (equals < 0 && s[i] === "=" && i > start) equals = i;
      if (s[i] === '"') inQuote = !inQuote;
    }
    // i is the end of this argument (exclusive); the kernel NULs a closing quote.
    let end = i;
    const endsWithQuote = end > start && s[end - 1] === '"';
    let name: string;
    let value: string | null;
    if (equals < 0) {
      if (quoted && endsWithQuote) end--;
      name = s.slice(start, end);
      value = null;
    } else {
      name = s.slice(start, equals);
      let vStart = equals + 1;
      if (s[vStart] === '"') {
        vStart++;
        if (endsWithQuote) end--;
      } else if (quoted && endsWithQuote) end--;
      value = s.slice(vStart, Math.max(vStart, end));
    }
    out.push({ name, value });
    s = s.slice(i < s.length ? i + 1 : i).replace(/^[ \t\n\v\f\r]+/, "");
    if (name === "--" && value === null) break;
  }
  return out.filter((a) => !(a.name === "--" && a.value === null));
}
