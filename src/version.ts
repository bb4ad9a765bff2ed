/** isboot's version; kept equal to deno.json's "version" (a test pins it). */
export const VERSION = "0.2.0";
