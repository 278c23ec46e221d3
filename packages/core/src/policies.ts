/**
 * Mixture policies as a table: how each named policy turns a domain into the adapter-weight rows
 * to score, and which row answers. The request parser, the recommender, the evaluation and the
 * HTTP API all read this one table.
 */
import { MolorecError } from "./errors.js";
import { quoteName } from "./own.js";
import type { AdapterWeights } from "./lora-mixture.js";
import type { PackManifest } from "./manifest.js";

/** Where a response's λ came from. */
export type MixtureSource = "policy" | "calibrated" | "default" | "request" | "adaptive" | "none";

/** One row a policy scores: a λ of the domain adapter (null: the base model) and where it came from. */
export interface PolicyRow {
  lambda: number | null;
  source: MixtureSource;
}

/** What a policy's rows are resolved against. */
export interface PolicyContext {
  manifest: PackManifest;
  /** A domain of the pack, or null (no domain adapter). */
  domain: string | null;
  /** The λ grid of the `adaptive` policy. */
  adaptiveLambdas: readonly number[];
}

/**
 * A named policy: its rows, and whether the row of least entropy objective answers (else the
 * only row does).
 */
export interface PolicySpec {
  rows(ctx: PolicyContext): PolicyRow[];
  byObjective: boolean;
}

const fixed = (lambda: number | null, source: MixtureSource = "policy"): PolicySpec => ({
  rows: () => [{ lambda, source }],
  byObjective: false,
});

/** The named mixture policies. λ is always the weight of the domain adapter (the general one gets 1 − λ). */
export const POLICIES = {
  /** The base model, no adapter. */
  base: fixed(null, "none"),
  /** The domain-general adapter alone (λ = 0). */
  general: fixed(0),
  /** The domain's own adapter alone (λ = 1). */
  domain: fixed(1),
  /** Weight averaging, λ = 0.5. */
  wa: fixed(0.5),
  /** The λ the pack stores for the domain, found by entropy minimisation (falls back to the default λ). */
  calibrated: {
    rows: ({ manifest, domain }) => {
      if (domain === null) return [{ lambda: 0, source: "policy" }];
      const d = manifest.domains[domain]!;
      return [
        d.calibratedLambda === undefined
          ? { lambda: d.defaultLambda, source: "default" }
          : { lambda: d.calibratedLambda, source: "calibrated" },
      ];
    },
    byObjective: false,
  },
  /** λ chosen per request: the one of the adaptive grid with the least entropy objective. */
  adaptive: {
    rows: ({ adaptiveLambdas }) => adaptiveLambdas.map((lambda) => ({ lambda, source: "adaptive" })),
    byObjective: true,
  },
} satisfies Record<string, PolicySpec>;

/** A policy by name. */
export type NamedPolicy = keyof typeof POLICIES;

/** How adapters are mixed for a request: a named policy, or a fixed λ in [0, 1]. */
export type MixturePolicy = NamedPolicy | { lambda: number };

/** Every named policy, in table order. */
export const POLICY_NAMES = Object.keys(POLICIES) as readonly NamedPolicy[];

/** Whether `name` is a named policy (own properties only: `"toString"` is not one). */
export function isPolicyName(name: string): name is NamedPolicy {
  return Object.hasOwn(POLICIES, name);
}

/** A policy as evaluation reports name it: its name, or `lambda=0.3`. */
export function policyName(p: MixturePolicy): string {
  return typeof p === "object" ? `lambda=${p.lambda}` : p;
}

/** A resolved mixture: the adapter weights of one batch row and its λ. */
export interface ResolvedMixture {
  weights: AdapterWeights;
  lambda: number | null;
  source: MixtureSource;
}

/** A policy resolved for a domain: the rows to score and how the answer is chosen among them. */
export interface ResolvedPolicy {
  rows: ResolvedMixture[];
  /** The row of least entropy objective answers (`adaptive`); else the only row does. */
  byObjective: boolean;
}

/**
 * The domain a request names: the pack's default when none is named, `UNKNOWN_DOMAIN` when the
 * pack has no such domain.
 */
export function resolveDomain(manifest: PackManifest, name: string | null | undefined): string | null {
  if (name == null) return manifest.defaultDomain;
  checkDomain(manifest, name);
  return name;
}

function checkDomain(manifest: PackManifest, name: string): void {
  if (!Object.hasOwn(manifest.domains, name)) {
    const known = Object.keys(manifest.domains);
    throw new MolorecError(
      "UNKNOWN_DOMAIN",
      `domain ${quoteName(name)} is not in pack ${manifest.name}; it has: ${known.join(", ") || "no domains"}.`,
      {
        details: { domain: name, known },
      },
    );
  }
}

/**
 * Adapter weights of λ for a domain: the general adapter at 1 − λ, the domain's at λ (either
 * left out at weight 0). `INVALID_MIXTURE` when the pack lacks the adapter a weight needs.
 */
export function mixtureWeights(manifest: PackManifest, domain: string | null, lambda: number): AdapterWeights {
  if (domain !== null) checkDomain(manifest, domain);
  const general = manifest.generalAdapter;
  const specific = domain === null ? null : manifest.domains[domain]!.adapter;
  if (lambda < 1 && general === null)
    throw new MolorecError("INVALID_MIXTURE", `pack ${manifest.name} has no general adapter; only λ = 1 ("domain") is possible.`);
  if (lambda > 0 && specific === null)
    throw new MolorecError("INVALID_MIXTURE", `no domain given and pack ${manifest.name} has no default domain; pass "domain".`);
  const w: Array<readonly [string, number]> = [];
  if (lambda < 1) w.push([general!, 1 - lambda]);
  if (lambda > 0) w.push([specific!, lambda]);
  return w;
}

/** Resolves a policy for a domain (null: no domain adapter) to its rows. Throws coded errors. */
export function resolvePolicy(ctx: PolicyContext, policy: MixturePolicy): ResolvedPolicy {
  if (ctx.domain !== null) checkDomain(ctx.manifest, ctx.domain);
  if (typeof policy === "object") return { rows: [row(ctx, { lambda: policy.lambda, source: "request" })], byObjective: false };
  if (!isPolicyName(policy))
    throw new MolorecError("INVALID_MIXTURE", `${quoteName(policy)} is not a mixture policy; use one of ${POLICY_NAMES.join(", ")}`);
  const spec: PolicySpec = POLICIES[policy];
  return { rows: spec.rows(ctx).map((r) => row(ctx, r)), byObjective: spec.byObjective };
}

function row(ctx: PolicyContext, r: PolicyRow): ResolvedMixture {
  return { weights: r.lambda === null ? [] : mixtureWeights(ctx.manifest, ctx.domain, r.lambda), lambda: r.lambda, source: r.source };
}

/**
 * Which row of a resolved policy answers: the one of least objective (the first on ties) when
 * the policy chooses by objective, else its only row. `objective(i)` is row i's value.
 */
export function chooseRow(policy: ResolvedPolicy, objective: (row: number) => number): number {
  if (!policy.byObjective) return 0;
  let best = 0;
  for (let i = 1; i < policy.rows.length; i++) if (objective(i) < objective(best)) best = i;
  return best;
}
