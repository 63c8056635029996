// Small building blocks shared by the views.

/** No table renders more rows than this; the rest are counted, not drawn. */
export const ROWS_MAX = 500;

/**
 * A titled block for one resource type. When the user may not read that type (or the
 * server doesn't serve it) the Status message takes the table's place; the other
 * sections carry on.
 */
export function Section({ title, slot, total, note, children }) {
  const denied = slot?.status === 'denied';
  const shown = Math.min(total ?? 0, ROWS_MAX);
  return (
    <section class="card">
      <header class="card-head">
        <h2>{title}</h2>
        {!denied && total !== undefined && <span class="count">{total}</span>}
        {slot?.status === 'reconnecting' && <span class="stale" title={slot.message}>reconnecting…</span>}
        {note && <span class="note">{note}</span>}
      </header>
      {denied ? (
        <p class="denied" data-testid="denied">{slot.message}</p>
      ) : (
        <>
          {children}
          {total > ROWS_MAX && (
            <p class="capped">
              showing {shown} of {total}
            </p>
          )}
        </>
      )}
    </section>
  );
}

/** A table body's single row when there is nothing to show. */
export function EmptyRow({ cols, slot, what }) {
  const text = slot && (slot.status === 'connecting' || slot.status === 'idle') ? 'Loading…' : `No ${what}.`;
  return (
    <tr class="empty">
      <td colSpan={cols}>{text}</td>
    </tr>
  );
}

/** The first ROWS_MAX of `items`, sorted by `compare`. */
export function capped(items, compare) {
  return items.sort(compare).slice(0, ROWS_MAX);
}

/** A coloured word: ok / warn / bad. */
export function Badge({ tone, children, title }) {
  return (
    <span class={`badge ${tone}`} title={title}>
      {children}
    </span>
  );
}
