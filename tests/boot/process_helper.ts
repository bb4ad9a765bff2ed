/**
 * Stage 1 sets IO_FLUSHER (reporting a refusal) and re-execs itself under
 * argv[0] "@isboot-test"; stage 2 locks its file mappings, survives GC, and
 * prints what it is as JSON.
 */
import {
  getIoFlusher,
  lockBuffer,
  lockFileMappings,
  reexecSelf,
  selfArgv,
  setIoFlusher,
  setOomScoreAdj,
} from "../../src/sys/process.ts";

if (Deno.env.get("ISBOOT_TEST_STAGE") !== "2") {
  const flusher = setIoFlusher();
  reexecSelf("@isboot-test", selfArgv().slice(1), {
    ...Deno.env.toObject(),
    ISBOOT_TEST_STAGE: "2",
    ISBOOT_TEST_PID: String(Deno.pid),
    ISBOOT_TEST_FLUSHER: JSON.stringify(flusher),
  });
}
const locked = lockFileMappings();
const buf = new Uint8Array(1 << 20);
const bufLocked = lockBuffer(buf);
// Allocate and drop enough to run the GC many times: mlockall would abort V8 here.
let junk: unknown[] = [];
for (let i = 0; i < 200; i++) {
  junk.push(new Array(20000).fill(i));
  if (junk.length > 20) junk = [];
}
const oom = setOomScoreAdj(-1000);
console.log(JSON.stringify({
  argv0: selfArgv()[0],
  pidBefore: Number(Deno.env.get("ISBOOT_TEST_PID")),
  pid: Deno.pid,
  flusher: JSON.parse(Deno.env.get("ISBOOT_TEST_FLUSHER")!),
  flusherNow: getIoFlusher(),
  locked,
  bufLocked,
  oom,
  oomNow: Deno.readTextFileSync("/proc/self/oom_score_adj").trim(),
  vmLck: /VmLck:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))?.[1],
}));
