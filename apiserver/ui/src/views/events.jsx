// Events, newest first; Warnings stand out.

import { Badge, ResourceTable, capped } from '../components.jsx';
import { age, eventTime } from '../format.js';
import { list, state } from '../store.js';

export function EventsView({ ns }) {
  const slot = state.res.events;
  const all = list('events', ns);
  const rows = capped(all, (a, b) => eventTime(b) - eventTime(a));
  return (
    <ResourceTable
      title="Events"
      slot={slot}
      total={all.length}
      note="the newest 500 are kept"
      columns={['Last seen', 'Type', 'Reason', 'Object', 'Message', ['Count', 'num'], 'Namespace']}
      what="events"
      rows={rows}
      row={(ev) => {
        const obj = ev.involvedObject || ev.regarding || {};
        const warning = ev.type === 'Warning';
        return (
          <tr key={ev.metadata.uid || ev.metadata.name} class={warning ? 'warning' : ''}>
            <td>{eventTime(ev) ? age(eventTime(ev)) : '—'}</td>
            <td>{warning ? <Badge tone="bad">Warning</Badge> : ev.type || 'Normal'}</td>
            <td>{ev.reason || '—'}</td>
            <td class="name">{`${(obj.kind || '').toLowerCase()}/${obj.name || ''}`}</td>
            <td class="message">{ev.message || ev.note || ''}</td>
            <td class="num">{ev.count || ev.series?.count || 1}</td>
            <td>{ev.metadata.namespace}</td>
          </tr>
        );
      }}
    />
  );
}
