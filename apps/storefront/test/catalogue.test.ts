// The default catalogue (generated from examples/catalogue-movies.json) and how a pack picks its
// catalogue and request defaults — trained packs with domains, and plain LLMs such as SmolLM2.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { autoCataloguePath, readCatalogue, requestDefaults } from "../scripts/build.mjs";
import { APP_DIR, resolveConfig } from "../scripts/config.mjs";
import { catalogueText, makeCatalogue, slug, SOURCE, TARGET } from "../scripts/make-catalogue.mjs";

const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, "molorec.json"), "utf8"));
const repo = fileURLToPath(new URL("../../../", import.meta.url));
/** A pack without adapters or domains, like the SmolLM2 packs of scripts/smollm2-packs.sh. */
const plainLlm = { name: "smollm2", adapters: {}, generalAdapter: null, domains: {}, defaultDomain: null };

describe("the default catalogue", () => {
  it("is what scripts/make-catalogue.mjs writes from examples/catalogue-movies.json (run it after editing the list)", () => {
    expect(readFileSync(TARGET, "utf8")).toBe(catalogueText());
  });

  it("has every film of the list once, with a unique id, genre, year and price", () => {
    const src = JSON.parse(readFileSync(SOURCE, "utf8")) as { items: Array<{ title: string; genre: string; year: number }> };
    const cat = makeCatalogue(readFileSync(SOURCE, "utf8"));
    expect(cat.domain).toBe("movies-ml100k");
    expect(cat.items.map((i) => i.title)).toEqual(src.items.map((i) => i.title));
    expect(new Set(cat.items.map((i) => i.id)).size).toBe(cat.items.length);
    for (const it of cat.items) {
      expect(it.id).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
      expect(it.price).toBeGreaterThan(0);
      expect(typeof it.genre).toBe("string");
      expect(it.title).toContain(`(${it.year})`);
    }
    expect(slug("Godfather, The (1972)")).toBe("godfather-the-1972");
    expect(slug("Amélie (2001)")).toBe("amelie-2001");
  });
});

describe("which pack and catalogue the storefront serves", () => {
  it("defaults to packs/edge, whose domain picks catalogue/movies-ml100k.json and the calibrated mixture", () => {
    const cfg = resolveConfig([]);
    expect(cfg.packDir).toBe(join(repo, "packs/edge"));
    const manifest = manifestOf(cfg.packDir);
    expect(manifest.defaultDomain).toBe("movies-ml100k");
    expect(autoCataloguePath(manifest)).toBe(join(APP_DIR, "catalogue/movies-ml100k.json"));
    expect(readCatalogue(autoCataloguePath(manifest), Object.keys(manifest.domains)).items).toHaveLength(244);
    expect(requestDefaults(manifest, "movies-ml100k")).toEqual({ domain: "movies-ml100k", mixture: "calibrated" });
  });

  it("--pack switches the pack (relative to the working directory)", () => {
    const cfg = resolveConfig(["--pack", join(repo, "test/fixtures/tiny-pack")]);
    expect(cfg.packDir).toBe(join(repo, "test/fixtures/tiny-pack"));
    const manifest = manifestOf(cfg.packDir);
    expect(autoCataloguePath(manifest)).toBe(join(APP_DIR, "catalogue/movies.json"));
    // A pack with domains refuses a catalogue of another domain.
    expect(() => readCatalogue(join(APP_DIR, "catalogue/movies-ml100k.json"), Object.keys(manifest.domains))).toThrow(
      /"domain" is "movies-ml100k", but the pack's domains are: movies/,
    );
  });

  it("a pack without domains or adapters (SmolLM2) gets the film catalogue, no domain and the base model", () => {
    expect(autoCataloguePath(plainLlm)).toBe(join(APP_DIR, "catalogue/movies-ml100k.json"));
    expect(readCatalogue(autoCataloguePath(plainLlm), []).domain).toBe("movies-ml100k");
    expect(requestDefaults(plainLlm, "movies-ml100k")).toEqual({ domain: null, mixture: "base" });
  });
});
