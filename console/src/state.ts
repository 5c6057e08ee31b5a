// Shared state of the console: who is signed in, the current view, and the filters.
// The view lives in the hash (#/queue, #/request/ID) and the filters in the query string
// (?status=2&commune=17&category=3&funding=1&age=7&author=12&lang=en), so a link carries both, and moving
// between views keeps the filters. Not thread-related: the browser runs this on one thread.
import { signal } from "@preact/signals";
import type { User } from "@gen/kcnet/v1/domain_pb";

export const me = signal<User | null | undefined>(undefined); // undefined: not known yet

export interface Filters {
  status: string; // "" = awaiting my decision, "all", or a RequestStatus number
  commune: string; // org unit id, "" = all
  category: string;
  funding: string;
  age: string; // "" = any, else the minimum days since the last change
  author: string; // "" = anyone, else the collaborator's (author's) user id
}
const filterKeys: (keyof Filters)[] = ["status", "commune", "category", "funding", "age", "author"];

function readFilters(): Filters {
  const q = new URLSearchParams(location.search);
  return {
    status: q.get("status") ?? "",
    commune: q.get("commune") ?? "",
    category: q.get("category") ?? "",
    funding: q.get("funding") ?? "",
    age: q.get("age") ?? "",
    author: q.get("author") ?? "",
  };
}

export const filters = signal<Filters>(readFilters());
export const route = signal<string>(location.hash || "#/queue");

/** Writes a new URL (query + hash) and updates the signals. */
function go(query: URLSearchParams, hash: string, replace = false) {
  const search = query.toString();
  const url = `${location.pathname}${search ? "?" + search : ""}${hash}`;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  filters.value = readFilters();
  route.value = hash || "#/queue";
}

export function setFilters(next: Partial<Filters>) {
  const q = new URLSearchParams(location.search);
  const merged = { ...filters.value, ...next };
  for (const k of filterKeys) {
    if (merged[k]) q.set(k, merged[k]);
    else q.delete(k);
  }
  go(q, location.hash, true);
}

export function navigate(hash: string) {
  go(new URLSearchParams(location.search), hash);
}

export function setLangParam(l: string) {
  const q = new URLSearchParams(location.search);
  if (l === "vi") q.delete("lang");
  else q.set("lang", l);
  go(q, location.hash, true);
}

addEventListener("popstate", () => {
  filters.value = readFilters();
  route.value = location.hash || "#/queue";
});
addEventListener("hashchange", () => {
  route.value = location.hash || "#/queue";
});
