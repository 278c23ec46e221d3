// Runs a command as the leader of its own process group and ends the whole group (the command
// and everything it started, e.g. wrangler's workerd) when the parent that asked for it is gone
// or a lifetime cap is reached, so a killed test run never leaves wrangler dev behind.
//   node watchdog.mjs PARENT_PID MAX_LIFETIME_MS COMMAND [ARGS...]
import { spawn } from "node:child_process";

const [parentPid, maxLifetimeMs, command, ...args] = process.argv.slice(2);
const child = spawn(command, args, { stdio: "inherit" });
const endGroup = () => {
  try {
    process.kill(-process.pid, "SIGTERM");
  } catch {
    process.exit(1);
  }
};
const timer = setInterval(() => {
  try {
    process.kill(Number(parentPid), 0);
  } catch {
    endGroup();
  }
}, 1000);
const cap = setTimeout(endGroup, Number(maxLifetimeMs));
child.on("exit", (code, signal) => {
  clearInterval(timer);
  clearTimeout(cap);
  process.exit(code ?? (signal ? 1 : 0));
});
