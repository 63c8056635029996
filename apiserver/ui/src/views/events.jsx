// Events, newest first; Warnings stand out.

import { EmptyRow, Section, capped } from '../components.jsx';
import { age, eventTime } from '../format.js';
import { list, state } from '../store.js';

export function EventsView({ ns }) {
  const slot = state.res.events;
  const all = list('events', ns);
  const rows = capped(all, (a, b) => eventTime(b) - eventTime(a));
  return (
    <Section title="Events" slot={slot} total={all.length} note="the newest 500 are kept">
      <table class="grid">
        <thead>
          <tr>
            <th>Last seen</th>
            <th>Type</th>
            <th>Reason</th>
            <th>Object</th>
            <th>Message</th>
            <th class="num">Count</th>
            <th>Namespace</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && <EmptyRow cols={7} slot={slot} what="events" />}
          {rows.map((ev) => {
            const obj = ev.involvedObject || ev.regarding || {};
            const warning = ev.type === 'Warning';
            return (
              <tr key={ev.metadata.uid || ev.metadata.name} class={warning ? 'warning' : ''}>
                <td>{eventTime(ev) ? age(eventTime(ev)) : '—'}</td>
                <td>{warning ? <span class="badge bad">Warning</span> : ev.type || 'Normal'}</td>
                <td>{ev.reason || '—'}</td>
                <td class="name">{`${(obj.kind || '').toLowerCase()}/${obj.name || ''}`}</td>
                <td class="message">{ev.message || ev.note || ''}</td>
                <td class="num">{ev.count || ev.series?.count || 1}</td>
                <td>{ev.metadata.namespace}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </Section>
  );
}
