// Services with the addresses behind them, from the Endpoints object of the same name.

import { ResourceTable, capped } from '../components.jsx';
import { age, endpointAddresses, servicePorts } from '../format.js';
import { byNamespaceAndName, list, state } from '../store.js';

// A Service can have thousands of endpoints; the cell lists this many.
const ADDRESSES_SHOWN = 20;

function Endpoints({ svc }) {
  const epSlot = state.res.endpoints;
  if (epSlot.status === 'denied') return <span class="muted">—</span>;
  if (!svc.spec?.selector && svc.spec?.type === 'ExternalName') return <span class="muted">{svc.spec.externalName}</span>;
  const ep = epSlot.items.get(`${svc.metadata.namespace}/${svc.metadata.name}`);
  const addrs = endpointAddresses(ep);
  if (!addrs.length) return <span class="muted">&lt;none&gt;</span>;
  return (
    <span class="addrs">
      {addrs.slice(0, ADDRESSES_SHOWN).map((a, i) =>
        a.ready ? (
          <span key={i} class="addr mono">
            {a.addr}
          </span>
        ) : (
          <span key={i} class="addr mono notready" title="not ready">
            {a.addr} (not ready)
          </span>
        ),
      )}
      {addrs.length > ADDRESSES_SHOWN && <span class="muted">+{addrs.length - ADDRESSES_SHOWN} more</span>}
    </span>
  );
}

export function ServicesView({ ns }) {
  const slot = state.res.services;
  const all = list('services', ns);
  const rows = capped(all, byNamespaceAndName);
  const epDenied = state.res.endpoints.status === 'denied';
  return (
    <ResourceTable
      title="Services"
      slot={slot}
      total={all.length}
      note={epDenied ? `endpoints: ${state.res.endpoints.message}` : ''}
      columns={['Namespace', 'Name', 'Type', 'Cluster IP', 'Ports', 'Endpoints', 'Age']}
      what="services"
      rows={rows}
      row={(svc) => (
        <tr key={svc.metadata.uid} data-testid={`service-${svc.metadata.namespace}-${svc.metadata.name}`}>
          <td>{svc.metadata.namespace}</td>
          <td class="name">{svc.metadata.name}</td>
          <td>{svc.spec?.type || 'ClusterIP'}</td>
          <td class="mono">{svc.spec?.clusterIP || '—'}</td>
          <td class="mono">{servicePorts(svc)}</td>
          <td data-field="endpoints">
            <Endpoints svc={svc} />
          </td>
          <td>{age(svc.metadata.creationTimestamp)}</td>
        </tr>
      )}
    />
  );
}
