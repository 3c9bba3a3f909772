// The federation page (#resolver/federation): the sites, their health and what they hold.

import * as api from '../api';
import { html } from '../html';

const View = girder.views.View;
const moment = girder.moment;

const REFRESH_MS = 15000;

function when(date) {
    if (!date) {
        return html`<span class="text-muted">never</span>`;
    }
    const m = moment(date);
    return html`<span title="${m.format('LLLL')}">${m.fromNow()}</span>`;
}

/** What deserves an admin's look: disputed identifiers, no credential, admin limits. */
function flags(site) {
    const out = [];
    if (site.disputedCount) {
        out.push(html` <span class="label label-warning g-resolver-site-disputed"
            title="${`Claims identifiers another operator's site registered first: ${(site.disputed || []).join(', ')}`}"
            >${site.disputedCount} disputed</span>`);
    }
    if (!site.hasCredential) {
        out.push(html` <span class="label label-default g-resolver-site-no-credential"
            title="No launch credential: launches there fail until its feder8 registers one">no credential</span>`);
    }
    const limits = site.limits || {};
    if (limits.weight !== undefined || limits.capacity !== undefined) {
        const parts = [];
        if (limits.weight !== undefined) {
            parts.push(`weight ≤ ${limits.weight}`);
        }
        if (limits.capacity !== undefined) {
            parts.push(`capacity ≤ ${limits.capacity}`);
        }
        out.push(html` <span class="label label-info g-resolver-site-limits"
            title="Bounds set by this resolver's admin">${parts.join(', ')}</span>`);
    }
    return out;
}

function notebooksCell(site) {
    const running = site.running ?? 0;
    return site.capacity ? `${running} of ${site.capacity}` : String(running);
}

function healthCell(site) {
    if (site.healthy && site.suspect) {
        const why = site.suspectReason ? `: ${site.suspectReason}` : '';
        return html`<span class="label label-warning g-resolver-health g-resolver-suspect"
            title="Failed calls lately${why}"><i class="icon-attention"></i>suspect</span>
            <span class="text-muted g-resolver-suspect-since">since ${when(site.suspectSince)}</span>`;
    }
    return site.healthy
        ? html`<span class="label label-success g-resolver-health"><i class="icon-ok-circled"></i>healthy</span>`
        : html`<span class="label label-danger g-resolver-health"><i class="icon-attention"></i>unreachable</span>`;
}

const FederationView = View.extend({
    events: {
        'click .g-resolver-refresh': function (event) {
            event.preventDefault();
            this.load();
        },
    },

    initialize() {
        this.sites = null;
        this.error = null;
        this.render();
        this.load();
        this.timer = window.setInterval(() => {
            if (!this.el.isConnected || !this.$('.g-resolver-federation').length) {
                window.clearInterval(this.timer);
                return;
            }
            this.load();
        }, REFRESH_MS);
    },

    destroy() {
        window.clearInterval(this.timer);
        View.prototype.destroy.apply(this, arguments);
    },

    async load() {
        try {
            this.sites = await api.listSites();
            this.error = null;
        } catch (err) {
            this.error = err;
        }
        this.loadedAt = new Date();
        this.render();
    },

    render() {
        let body;
        if (this.error) {
            body = html`<div class="alert alert-danger g-resolver-federation-error">Could not list the sites: ${this.error.message}</div>`;
        } else if (!this.sites) {
            body = html`<p><i class="icon-spin3 animate-spin"></i> Loading sites…</p>`;
        } else if (!this.sites.length) {
            body = html`<div class="g-info-message-container g-resolver-no-sites"><i class="icon-info-circled"></i>
                No site has registered with this server yet. A site's feder8 sidecar registers it.</div>`;
        } else {
            const healthy = this.sites.filter((s) => s.healthy && !s.suspect).length;
            const suspect = this.sites.filter((s) => s.healthy && s.suspect).length;
            const datasets = this.sites.reduce((n, s) => n + (s.datasetCount || 0), 0);
            const running = this.sites.reduce((n, s) => n + (s.running || 0), 0);
            body = html`
              <p class="g-resolver-federation-summary">
                <b>${this.sites.length}</b> site${this.sites.length === 1 ? '' : 's'},
                <b>${healthy}</b> healthy${suspect ? html`, <b class="g-resolver-suspect-count">${suspect}</b> suspect` : ''}; <b>${datasets}</b> registered dataset${datasets === 1 ? '' : 's'};
                <b>${running}</b> notebook${running === 1 ? '' : 's'} running.
              </p>
              <table class="table table-striped table-condensed g-resolver-sites">
                <thead><tr>
                  <th>Site</th><th>Operated by</th><th>Health</th><th>Last heartbeat</th><th>Datasets</th>
                  <th>Notebooks running</th><th>Last registration</th><th>API URL</th>
                </tr></thead>
                <tbody>
                  ${this.sites.map((site) => html`
                    <tr class="g-resolver-site" data-site="${site.name}">
                      <td><i class="icon-server"></i> <b>${site.name}</b>${flags(site)}</td>
                      <td class="g-resolver-site-operator">${site.operator || html`<span class="text-muted">unknown</span>`}</td>
                      <td>${healthCell(site)}</td>
                      <td>${when(site.lastHeartbeat)}</td>
                      <td class="g-resolver-site-datasets">${site.datasetCount ?? 0}</td>
                      <td class="g-resolver-site-running">${notebooksCell(site)}</td>
                      <td>${when(site.lastRegistration)}</td>
                      <td><a href="${site.apiUrl}" target="_blank" rel="noopener"><code>${site.apiUrl}</code></a></td>
                    </tr>`)}
                </tbody>
              </table>`;
        }
        this.$el.html(html`
          <div class="g-resolver-federation">
            <div class="g-body-title"><i class="icon-globe"></i> Data DNS federation</div>
            <p class="g-body-subtitle">The sites that registered their datasets with this resolver.
               Refreshes every ${REFRESH_MS / 1000} seconds.
               <a class="g-resolver-refresh" href="#resolver/federation"><i class="icon-arrows-cw"></i>Refresh now</a>
               · <a href="#plugins/resolver/config"><i class="icon-cog"></i>Settings</a></p>
            ${body}
          </div>`.toString());
        return this;
    },
});

export default FederationView;
