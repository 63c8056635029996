// Events, newest first; Warnings stand out.

import { Badge, ResourceTable, tableOf } from '../components.jsx';
import { age, eventTime } from '../format.js';
import { EVENTS_MAX } from '../live.js';

export function EventsView({ ns }) {
  return (
    <ResourceTable
      {...tableOf('events', ns, (a, b) => eventTime(b) - eventTime(a))}
      title="Events"
      note={`the newest ${EVENTS_MAX} across the cluster are kept`}
      columns={['Last seen', 'Type', 'Reason', 'Object', 'Message', ['Count', 'num'], 'Namespace']}
      what="events"
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
