/** splitKernelCmdline (src/boot/kernel_args.ts): the kernel's own next_arg() splitting. */
import { assertEquals } from "../helpers/assert.ts";
import fc from "fast-check";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { splitKernelCmdline } from "../../src/boot/kernel_args.ts";

Deno.test("kernel args: splits like the kernel's next_arg, quotes removed", () => {
  assertEquals(splitKernelCmdline('  a b=c  d="x y" "e f" g="h" i=j"k l"m -- init args\n'), [
    { name: "a", value: null },
    { name: "b", value: "c" },
    { name: "d", value: "x y" },
    { name: "e f", value: null },
    { name: "g", value: "h" },
    { name: "i", value: 'j"k l"m' },
  ]);
  // An '=' first in an argument is part of the name (kernel keeps equals==0 as "none").
  assertEquals(splitKernelCmdline("=a=b =c"), [{ name: "=a", value: "b" }, {
    name: "=c",
    value: null,
  }]);
  assertEquals(splitKernelCmdline('a="'), [{ name: "a", value: "" }]);
  assertEquals(splitKernelCmdline(""), []);
});

const token = fc.stringMatching(/^[A-Za-z0-9._\/:,@+-]{1,12}$/);
const spaced = fc.stringMatching(/^[A-Za-z0-9 ._=-]{0,12}$/);

Deno.test("kernel args property: join then split returns the arguments", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ name: token, value: fc.option(spaced, { nil: null }) }), {
        maxLength: 8,
      }),
      fc.array(fc.constantFrom(" ", "  ", "\t", "\n"), { minLength: 9, maxLength: 9 }),
      (args, seps) => {
        const names = args.filter((a) => a.name !== "--").map((a) => ({ ...a }));
        const line = names.map((a, i) =>
          (a.value === null ? a.name : `${a.name}="${a.value}"`) + seps[i]
        ).join("");
        assertEquals(splitKernelCmdline(line), names);
      },
    ),
    fuzzOptions(300),
  );
});
