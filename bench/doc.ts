/** The ~1 KB JSON-like document the structured-value benchmarks send (call and contexts). */
export const doc = {
  id: 12345,
  name: "bunpy benchmark document",
  active: true,
  score: 98.6,
  tags: ["python", "bun", "ffi", "fast"],
  owner: { id: 7, login: "octo", email: "octo@example.com", admin: false },
  items: Array.from({ length: 8 }, (_, i) => ({ sku: `SKU-${1000 + i}`, qty: i + 1, price: 9.99 + i, note: null })),
  history: [
    { at: "2026-11-01T10:00:00Z", event: "created" },
    { at: "2026-11-02T11:30:00Z", event: "updated" },
  ],
};
