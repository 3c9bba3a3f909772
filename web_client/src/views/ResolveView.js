// The #resolve page: where a repository's link ends. It shows the identifier, the
// dataset and where it lives, asks an anonymous visitor to log in (and comes back
// here), and launches a notebook next to the data, then goes to it.

import * as api from '../api';
import { html } from '../html';
import { launchTarget, notebooks, safeNotebookUrl, toolMenu } from '../notebooks';
import { identifierBadge } from './DatasetPanel';
import NotebookControls from './NotebookControls';
import RunControls from './RunControls';

const View = girder.views.View;
const { getCurrentUser } = girder.auth;
const events = girder.events;
const moment = girder.moment;

function when(date) {
    if (!date) {
        return html`<span class="text-muted">never</span>`;
    }
    const m = moment(date);
    return html`<span title="${m.format('LLLL')}">${m.fromNow()}</span>`;
}

/** A site's web client, from its API URL (…/api/v1 → …/). */
function siteWebUrl(apiUrl) {
    return `${String(apiUrl || '').replace(/\/api\/v1\/?$/, '')}/`;
}

function healthBadge(location) {
    if (location.healthy && location.suspect) {
        return html`<span class="label label-warning g-resolver-health g-resolver-suspect"
            title="It failed calls lately: tried after the other sites until it answers again"><i class="icon-attention"></i>suspect</span>`;
    }
    return location.healthy
        ? html`<span class="label label-success g-resolver-health"><i class="icon-ok-circled"></i>reachable</span>`
        : html`<span class="label label-danger g-resolver-health"><i class="icon-attention"></i>unreachable</span>`;
}

const ResolveView = View.extend({
    events: {
        'click .g-resolver-login-button': function (event) {
            event.preventDefault();
            events.trigger('g:loginUi');
        },
        'click .g-resolver-register-button': function (event) {
            event.preventDefault();
            events.trigger('g:registerUi');
        },
        'click .g-resolver-confirm-launch': function (event) {
            event.preventDefault();
            this.confirming = false;
            this.render();
            if (this.controls) {
                this.controls.launch();
            }
        },
        'click .g-resolver-cancel-launch': function (event) {
            event.preventDefault();
            this.confirming = false;
            this.render();
        },
        'submit .g-resolver-lookup-form': function (event) {
            event.preventDefault();
            const id = this.$('.g-resolver-lookup-input').val().trim();
            if (id) {
                girder.router.navigate(`resolve?id=${encodeURIComponent(id)}`, { trigger: true });
            }
        },
    },

    initialize(settings) {
        this.query = settings.query || {};
        this.identifierText = this.query.id || '';
        this.autolaunch = ['1', 'true', 'yes'].includes(String(this.query.autolaunch || '').toLowerCase());
        this.confirming = false;
        this.refused = null;
        this.result = null;
        this.failure = null;
        this.loading = Boolean(this.identifierText);
        this.render();
        if (this.identifierText) {
            this.load();
        }
    },

    async load() {
        try {
            const [result] = await Promise.all([
                api.resolveIdentifier(this.identifierText, this.query.site),
                notebooks.refresh(),
            ]);
            this.result = result;
        } catch (err) {
            this.failure = err;
        }
        this.loading = false;
        this.render();
        this.maybeAutolaunch();
    },

    /** The location a launch goes to: the first healthy one (the server ranks them). */
    best() {
        const locations = (this.result && this.result.locations) || [];
        return locations.find((loc) => loc.healthy) || null;
    },

    maybeAutolaunch() {
        if (!this.autolaunch || !getCurrentUser() || !this.controls) {
            return;
        }
        // Launch once per page visit; a re-render must not start another one.
        this.autolaunch = false;
        if (this.query.site) {
            // The link, not the person, chose the site: they confirm it first.
            this.confirming = true;
            this.render();
            return;
        }
        this.controls.launch();
    },

    /** The same page with ``site`` preferred: the resolver then ranks it first. */
    preferHref(site) {
        const query = { id: this.identifierText, site };
        return `#resolve?${girder.$.param(query)}`;
    },

    goToNotebook(nb) {
        if (!nb || !nb.url) {
            return;
        }
        // Checked again here: only an http(s) notebook URL is ever navigated to.
        const url = safeNotebookUrl(nb.url);
        if (!url) {
            this.refused = nb.url;
            this.render();
            return;
        }
        this.$('.g-resolver-opening').removeClass('hidden');
        window.location.assign(url);
    },

    render() {
        this.controls = null;
        this.$el.html(html`
          <div class="g-resolver-resolve">
            <div class="g-body-title"><i class="icon-link"></i> Resolve a dataset identifier</div>
            ${this.renderBody()}
          </div>`.toString());
        const best = this.best();
        const slot = this.el.querySelector('.g-resolver-launch-slot');
        if (best && slot) {
            // A site named in the page's address is the person's choice: launched there or
            // nowhere. Otherwise the resolver may fail over to another site.
            const explicit = Boolean(this.query.site) && best.site === this.query.site;
            // The tools of the sites a launch may go to (the chosen one only when it is
            // explicit); the central sends a tool launch to a site that offers it.
            const reachable = explicit ? [best] : this.result.locations.filter((loc) => loc.healthy);
            const menu = toolMenu(reachable.map((loc) => loc.tools), best.recommendedTool,
                'not ready at the sites that hold this dataset');
            this.controls = new NotebookControls(slot, launchTarget(best, this.result.identifier, explicit, menu), {
                openTarget: '_self',
                onRunning: (nb) => this.goToNotebook(nb),
            }).render();
            const runSlot = this.el.querySelector('.g-resolver-run-slot');
            if (runSlot) {
                // A batch run goes where a launch would (the same site, the same failover).
                new RunControls(runSlot, launchTarget(best, this.result.identifier, explicit, menu)).render();
            }
        }
        return this;
    },

    renderBody() {
        if (!this.identifierText) {
            return this.renderLookupForm('Enter a DOI, Handle, ARK, URN or URL to find where the data lives.');
        }
        if (this.loading) {
            return html`
              <p class="g-resolver-identifier-line">Identifier: <code>${this.identifierText}</code></p>
              <p class="g-resolver-loading"><i class="icon-spin3 animate-spin"></i> Looking up where this dataset lives…</p>`;
        }
        if (this.failure) {
            return this.renderFailure();
        }
        return this.renderResult();
    },

    renderLookupForm(text) {
        return html`
          <form class="g-resolver-lookup-form form-inline">
            <p>${text}</p>
            <div class="form-group">
              <input class="g-resolver-lookup-input form-control" type="text" size="50"
                  placeholder="e.g. doi:10.5072/example or https://doi.org/10.5072/example"
                  value="${this.identifierText}">
            </div>
            <button class="btn btn-primary" type="submit"><i class="icon-search"></i> Resolve</button>
          </form>`;
    },

    loginPrompt(text) {
        return html`
          <div class="g-resolver-login-prompt alert alert-info">
            <p>${text}</p>
            <p>
              <button class="btn btn-primary g-resolver-login-button"><i class="icon-login"></i> Log in</button>
              <button class="btn btn-default g-resolver-register-button">Register</button>
            </p>
          </div>`;
    },

    renderFailure() {
        const err = this.failure;
        let explanation;
        if (err.status === 400) {
            explanation = html`
              <h4>This is not an identifier we can read.</h4>
              <p class="g-resolver-reason">${err.message}</p>
              <p>Data DNS understands DOIs (<code>doi:10.5072/abc</code>, <code>https://doi.org/10.5072/abc</code>),
                 Handles (<code>hdl:20.500.12345/abc</code>), ARKs (<code>ark:/99999/abc</code>), URNs and http(s) URLs.</p>`;
        } else if (err.status === 404) {
            explanation = html`
              <h4>No site in this federation holds this dataset.</h4>
              <p class="g-resolver-reason">${err.message}</p>
              <p>The identifier was understood, but no registered site has announced a copy of this data
                 ${getCurrentUser() ? '' : 'that you may see without logging in'}. Check the identifier,
                 or ask the repository that published it where the data is hosted.</p>`;
        } else {
            explanation = html`
              <h4>The identifier could not be resolved right now.</h4>
              <p class="g-resolver-reason">${err.message}</p>
              <p>Try again in a moment.</p>`;
        }
        return html`
          <p class="g-resolver-identifier-line">Identifier: <code>${this.identifierText}</code></p>
          <div class="g-resolver-failure alert ${err.status === 400 ? 'alert-warning' : 'alert-danger'}">${explanation}</div>
          ${err.status === 404 && !getCurrentUser() ? this.loginPrompt('If the dataset is private, log in to see it.') : ''}
          ${this.renderLookupForm('Resolve another identifier:')}`;
    },

    renderResult() {
        const { identifier, scheme, locations } = this.result;
        const best = this.best();
        const name = (best || locations[0] || {}).name || identifier;
        let action;
        if (!best) {
            const lastSeen = locations.map((l) => l.lastSeen).filter(Boolean).sort().pop();
            action = html`
              <div class="g-resolver-no-healthy alert alert-warning">
                <h4>None of the sites holding this dataset is reachable right now.</h4>
                <p>${locations.length === 1 ? 'The site that holds it' : `All ${locations.length} sites that hold it`}
                   stopped answering${lastSeen ? html` (last heard from ${when(lastSeen)})` : ''}, so no notebook
                   can be started next to the data. Try again later.</p>
              </div>`;
        } else if (!getCurrentUser()) {
            action = this.loginPrompt(this.autolaunch
                ? 'Log in and a notebook with this dataset will start for you right away.'
                : 'Log in to launch a Jupyter notebook next to this data.');
        } else {
            action = html`
              <div class="g-resolver-launch-box">
                <p>A Jupyter notebook will start at <b>${best.site}</b>${best.operator ? html` (operated by <b>${best.operator}</b>)` : ''}
                   with this dataset mounted read-only.</p>
                ${this.confirming ? html`
                  <div class="g-resolver-confirm alert alert-warning">
                    <p>This link asks to launch a notebook at <b>${best.site}</b>${best.operator ? html`, operated by <b>${best.operator}</b>` : ''}.
                       Launch there?</p>
                    ${best.disputed ? html`<p class="g-resolver-disputed-warning">Another site registered this identifier first;
                       <b>${best.site}</b>'s claim to it is disputed.</p>` : ''}
                    <p>
                      <button class="btn btn-primary g-resolver-confirm-launch">Launch at ${best.site}</button>
                      <button class="btn btn-default g-resolver-cancel-launch">Not now</button>
                    </p>
                  </div>` : ''}
                ${this.refused ? html`
                  <div class="g-resolver-refused alert alert-danger">The site answered with a notebook address that is
                    not an http(s) URL; it was not opened.</div>` : ''}
                <div class="g-resolver-launch-slot"></div>
                <div class="g-resolver-run-slot"></div>
                <p class="g-resolver-opening hidden"><i class="icon-spin3 animate-spin"></i> Opening your notebook…</p>
              </div>`;
        }
        return html`
          <div class="g-resolver-dataset-title">
            <span class="g-resolver-dataset-name">${name}</span>
            ${identifierBadge(identifier, scheme)}
            <span class="g-resolver-scheme text-muted">${(scheme || '').toUpperCase()}</span>
          </div>
          ${this.identifierText !== identifier ? html`<p class="text-muted">You asked for <code>${this.identifierText}</code>.</p>` : ''}
          ${action}
          <h4>Where it lives</h4>
          <table class="table table-condensed g-resolver-locations">
            <thead><tr><th>Site</th><th>Operated by</th><th>Folder</th><th>Tools</th><th>Health</th><th>Last heard from</th></tr></thead>
            <tbody>
              ${locations.map((loc) => html`
                <tr class="g-resolver-location${loc === best ? ' info' : ''}" data-site="${loc.site}">
                  <td><i class="icon-server"></i> ${loc.site}${loc.local ? html` <span class="label label-default">this server</span>` : ''}
                      ${loc === best ? html` <span class="label label-primary">chosen</span>` : ''}
                      ${loc !== best && loc.healthy ? html` <a class="g-resolver-prefer-site" href="${this.preferHref(loc.site)}"
                          title="Launch at ${loc.site} instead">use this site</a>` : ''}
                      ${loc.disputed ? html` <span class="label label-warning g-resolver-disputed"
                          title="Another operator's site registered this identifier first">disputed</span>` : ''}</td>
                  <td class="g-resolver-operator">${loc.local ? 'this server' : (loc.operator || html`<span class="text-muted">unknown</span>`)}</td>
                  <td>${loc.local
                      ? html`<a href="#folder/${loc.folderId}">${loc.name}</a>`
                      : html`<a href="${siteWebUrl(loc.apiUrl)}#folder/${loc.folderId}" target="_blank" rel="noopener"
                          title="The folder at ${loc.site}">${loc.name} <i class="icon-link-ext"></i></a>`}</td>
                  <td class="g-resolver-location-tools">${(loc.tools || []).map((t) => html`<span
                      class="label ${t.ready ? 'label-default' : 'label-warning'} g-resolver-location-tool" data-tool="${t.id}"
                      title="${t.ready ? t.name : `${t.name}: not ready at ${loc.site}`}">${t.name}${t.ready ? '' : ' (not ready)'}</span> `)}</td>
                  <td>${healthBadge(loc)}</td>
                  <td>${loc.local ? 'now (this server)' : when(loc.lastSeen)}</td>
                </tr>`)}
            </tbody>
          </table>`;
    },
});

export default ResolveView;
