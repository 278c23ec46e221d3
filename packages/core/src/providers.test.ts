import { describe, expect, it } from "vitest";
import { MolorecError } from "./errors.js";
import { openFirstProvider } from "./providers.js";

const fail = (message: string) => async () => {
  throw new Error(message);
};

describe("openFirstProvider", () => {
  it("returns the first provider that opens, with the failures of those before it", async () => {
    const tried: string[] = [];
    const open = (name: string) => async () => {
      tried.push(name);
      return `session on ${name}`;
    };
    const choice = await openFirstProvider("rt", [
      { name: "gpu", unavailable: "no adapter", open: open("gpu") },
      { name: "npu", open: fail("driver too old") },
      { name: "cpu", open: open("cpu") },
      { name: "never", open: open("never") },
    ]);
    expect(choice).toEqual({
      session: "session on cpu",
      provider: "cpu",
      failures: { gpu: { stage: "unavailable", message: "no adapter" }, npu: { stage: "session", message: "driver too old" } },
    });
    expect(tried).toEqual(["cpu"]); // an unavailable provider is not opened
  });

  it("throws one BACKEND_UNAVAILABLE naming every failure when none opens", async () => {
    const err = await openFirstProvider(
      "rt",
      [
        { name: "gpu", unavailable: "no adapter", open: fail("unreachable") },
        { name: "cpu", open: fail("bad model") },
      ],
      { unavailableStage: "adapter", hint: "Try another pack.", details: { requested: "auto" } },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MolorecError);
    expect(err).toMatchObject({
      code: "BACKEND_UNAVAILABLE",
      message: "rt could not open the model: gpu (adapter): no adapter; cpu (session): bad model. Try another pack.",
      details: { requested: "auto", failures: { gpu: { stage: "adapter" }, cpu: { stage: "session", message: "bad model" } } },
    });
    expect((err as Error).cause).toMatchObject({ message: "bad model" });
    await expect(openFirstProvider("rt", [])).rejects.toMatchObject({ code: "BACKEND_UNAVAILABLE", message: /no execution provider/ });
  });

  it("throws a backend's own coded error as it is, without trying further providers", async () => {
    const own = new MolorecError("BACKEND_UNAVAILABLE", "bound to another module");
    let cpu = false;
    const err = await openFirstProvider("rt", [
      {
        name: "wasm",
        open: async () => {
          throw own;
        },
      },
      {
        name: "cpu",
        open: async () => {
          cpu = true;
          return 1;
        },
      },
    ]).catch((e: unknown) => e);
    expect(err).toBe(own);
    expect(cpu).toBe(false);
  });
});
