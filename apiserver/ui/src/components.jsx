// Small building blocks shared by the views.

import { list, state } from './store.js';

/** No table renders more rows than this; the rest are counted, not drawn. */
export const ROWS_MAX = 500;

/**
 * A titled block for one resource type. When the user may not read that type (or the
 * server doesn't serve it) the Status message takes the table's place; the other
 * sections carry on.
 */
function Section({ title, slot, total, note, children }) {
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
function EmptyRow({ cols, slot, what }) {
  const text = slot && (slot.status === 'connecting' || slot.status === 'idle') ? 'Loading…' : `No ${what}.`;
  return (
    <tr class="empty">
      <td colSpan={cols}>{text}</td>
    </tr>
  );
}

/**
 * The table every view draws: a header of `columns` (labels, or [label, class] pairs),
 * then `row(item)` for each of `rows`, or an EmptyRow when there are none.
 */
export function Grid({ columns, slot, what, rows, row }) {
  return (
    <table class="grid">
      <thead>
        <tr>
          {columns.map((c) => {
            const [label, cls] = Array.isArray(c) ? c : [c];
            return <th class={cls}>{label}</th>;
          })}
        </tr>
      </thead>
      <tbody>
        {rows.length === 0 && <EmptyRow cols={columns.length} slot={slot} what={what} />}
        {rows.map(row)}
      </tbody>
    </table>
  );
}

/** A Section holding one resource type's Grid. */
export function ResourceTable({ title, slot, total, note, ...grid }) {
  return (
    <Section title={title} slot={slot} total={total} note={note}>
      <Grid slot={slot} {...grid} />
    </Section>
  );
}

/** The first ROWS_MAX of `items`, sorted by `compare`. */
export function capped(items, compare) {
  return items.sort(compare).slice(0, ROWS_MAX);
}

/**
 * What a ResourceTable of `kind` needs, as props: its store slot, how many objects it
 * has (in namespace `ns`, when given) and the first ROWS_MAX of them, sorted by `compare`.
 */
export function tableOf(kind, ns, compare) {
  const all = list(kind, ns);
  return { slot: state.res[kind], total: all.length, rows: capped(all, compare) };
}

/** A coloured word: ok / warn / bad / info. */
export function Badge({ tone, children, title }) {
  return (
    <span class={`badge ${tone}`} title={title}>
      {children}
    </span>
  );
}
