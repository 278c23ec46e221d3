/** One product of the catalogue (catalogue/*.json). */
export interface CatalogueItem {
  id: string;
  title: string;
  genre?: string;
  year?: number;
  price?: number;
}

export interface Catalogue {
  name?: string;
  domain: string;
  currency?: string;
  items: CatalogueItem[];
}

/** Moves `id` to the end of the history (most recent last), without duplicates, keeping `max`. */
export function addToHistory(history: readonly string[], id: string, max: number): string[] {
  const next = history.filter((h) => h !== id);
  next.push(id);
  return next.slice(-max);
}

/**
 * The candidates the model re-ranks: items not viewed yet, those sharing a genre with the last
 * few views first (a stand-in for a shop's retrieval stage), in catalogue order, at most `max`.
 */
export function pickCandidates(catalogue: readonly CatalogueItem[], history: readonly string[], max = 20): CatalogueItem[] {
  const viewed = new Set(history);
  const byId = new Map(catalogue.map((it) => [it.id, it]));
  const recentGenres = new Set(
    history
      .slice(-3)
      .map((id) => byId.get(id)?.genre)
      .filter((g): g is string => g !== undefined),
  );
  const unseen = catalogue.filter((it) => !viewed.has(it.id));
  const near = unseen.filter((it) => it.genre !== undefined && recentGenres.has(it.genre));
  const rest = unseen.filter((it) => !(it.genre !== undefined && recentGenres.has(it.genre)));
  return [...near, ...rest].slice(0, max);
}
