// The "My runs" page (#runs, and #runs/<id> for one run): the person's batch runs with
// their status, and for the chosen one its log (followed while it runs) and a link to
// its results folder.

import * as api from '../api';
import { html } from '../html';
import { followRun, isLiveRun, resultsLink } from '../runs';
import { whenLoginKnown } from './DatasetPanel';

const View = girder.views.View;
const { getCurrentUser } = girder.auth;
const events = girder.events;
const moment = girder.moment;

const LIST_REFRESH_MS = 5000;
const STATUS_CLASS = {
    queued: 'label-default',
    running: 'label-info',
    succeeded: 'label-success',
    failed: 'label-danger',
    cancelled: 'label-warning',
};

function when(date) {
    if (!date) {
        return html`<span class="text-muted">—</span>`;
    }
    const m = moment(date);
    return html`<span title="${m.format('LLLL')}">${m.fromNow()}</span>`;
}

function statusLabel(run) {
    return html`<span class="label ${STATUS_CLASS[run.status] || 'label-default'} g-resolver-run-status"
        data-status="${run.status}">${run.status}</span>`;
}

/** What the run runs, in one short line. */
function whatItRuns(run) {
    const text = run.command || (run.scriptFileId ? `script file ${run.scriptFileId}` : 'a script');
    return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

function resultsCell(run) {
    const link = resultsLink(run);
    if (!link) {
        return html`<span class="text-muted">${isLiveRun(run) ? 'not yet' : '—'}</span>`;
    }
    const external = !link.startsWith('#');
    return html`<a class="g-resolver-run-results" href="${link}"
        ${external ? html`target="_blank" rel="noopener noreferrer"` : ''}>
        <i class="icon-folder-open"></i> Results${run.site && run.remoteId ? ` at ${run.site}` : ''}</a>`;
}

const RunsView = View.extend({
    events: {
        'click .g-resolver-run-cancel': function (event) {
            event.preventDefault();
            this.cancel(event.currentTarget.dataset.runId);
        },
    },

    initialize(settings) {
        this.runId = settings.runId || null;
        this.runs = null;
        this.failure = null;
        this.log = '';
        this.detail = null;
        this.abort = null;
        this.render();
        this.load();
        if (this.runId) {
            this.follow(this.runId);
        }
        this.listenTo(events, 'g:login', () => {
            this.load();
            if (this.runId) {
                this.follow(this.runId);
            }
        });
        this.timer = setInterval(() => {
            if (!this.el.isConnected) {
                this.stopTimers();
            } else if ((this.runs || []).some(isLiveRun)) {
                this.load();
            }
        }, LIST_REFRESH_MS);
    },

    stopTimers() {
        clearInterval(this.timer);
        if (this.abort) {
            this.abort.abort();
        }
    },

    destroy() {
        this.stopTimers();
        View.prototype.destroy.call(this);
    },

    async load() {
        await whenLoginKnown();
        if (!getCurrentUser()) {
            this.render();
            return;
        }
        try {
            this.runs = await api.listRuns();
            this.failure = null;
        } catch (err) {
            this.failure = err.message;
        }
        this.render();
    },

    async follow(runId) {
        await whenLoginKnown();
        if (!getCurrentUser()) {
            return;
        }
        if (this.abort) {
            this.abort.abort();
        }
        const abort = new AbortController();
        this.abort = abort;
        this.log = '';
        try {
            this.detail = await api.getRun(runId);
        } catch (err) {
            this.detail = null;
            this.failure = err.message;
            this.render();
            return;
        }
        this.render();
        const ended = await followRun(this.detail, {
            signal: abort.signal,
            onText: (text) => {
                if (abort.signal.aborted || !text) {
                    return;
                }
                this.log += text;
                this.renderLog();
            },
            onRun: (run) => {
                if (!abort.signal.aborted) {
                    this.detail = run;
                    this.updateRow(run);
                    this.renderDetailHead();
                }
            },
        }).catch((err) => {
            this.failure = err.message;
            return null;
        });
        if (ended && !abort.signal.aborted) {
            this.detail = ended;
            this.renderDetailHead();
            this.updateRow(ended);
        }
    },

    async cancel(runId) {
        try {
            const run = await api.cancelRun(runId);
            this.updateRow(run);
            if (this.detail && this.detail._id === run._id) {
                this.detail = run;
                this.renderDetailHead();
            }
        } catch (err) {
            this.failure = err.message;
            this.render();
        }
    },

    updateRow(run) {
        if (!this.runs) {
            return;
        }
        const i = this.runs.findIndex((r) => r._id === run._id);
        if (i >= 0) {
            this.runs[i] = run;
            const row = this.el.querySelector(`tr[data-run-id="${run._id}"]`);
            if (row) {
                row.outerHTML = this.row(run).toString();
            }
        }
    },

    row(run) {
        return html`
          <tr class="g-resolver-run-row${this.runId === run._id ? ' info' : ''}" data-run-id="${run._id}">
            <td>${statusLabel(run)}${run.reused ? html` <span class="label label-default" title="An identical run succeeded before">reused</span>` : ''}</td>
            <td><a class="g-resolver-run-link" href="#runs/${encodeURIComponent(run._id)}"><code>${whatItRuns(run)}</code></a></td>
            <td>${run.site || ''}</td>
            <td>${run.tool || html`<span class="text-muted">default</span>`}</td>
            <td>${when(run.created)}</td>
            <td>${run.exitCode ?? ''}</td>
            <td>${resultsCell(run)}</td>
            <td>${isLiveRun(run) ? html`<button class="btn btn-xs btn-default g-resolver-run-cancel"
                data-run-id="${run._id}"><i class="icon-cancel"></i> Cancel</button>` : ''}</td>
          </tr>`;
    },

    detailHead() {
        const run = this.detail;
        if (!run) {
            return '';
        }
        return html`
          <h4>${statusLabel(run)} <code>${whatItRuns(run)}</code></h4>
          <p>
            ${run.site ? html`At <b>${run.site}</b>. ` : ''}Submitted ${when(run.created)}${run.ended ? html`, ended ${when(run.ended)}` : ''}.
            ${run.exitCode !== null && run.exitCode !== undefined ? html`Exit code <b>${run.exitCode}</b>.` : ''}
            ${resultsCell(run)}
          </p>
          ${run.reason ? html`<p class="g-resolver-run-reason text-muted">${run.reason}</p>` : ''}
          ${isLiveRun(run) ? html`<p class="g-resolver-run-following"><i class="icon-spin3 animate-spin"></i> Following the log while it runs…</p>` : ''}`;
    },

    renderDetailHead() {
        const head = this.el.querySelector('.g-resolver-run-detail-head');
        if (head) {
            head.innerHTML = this.detailHead().toString();
        }
    },

    renderLog() {
        const pre = this.el.querySelector('.g-resolver-run-log');
        if (pre) {
            const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.textContent = this.log;
            if (atEnd) {
                pre.scrollTop = pre.scrollHeight;
            }
        }
    },

    render() {
        let body;
        if (!getCurrentUser()) {
            body = html`<p class="g-resolver-runs-login">Log in to see your runs.</p>`;
        } else if (this.runs === null && !this.failure) {
            body = html`<p><i class="icon-spin3 animate-spin"></i> Loading your runs…</p>`;
        } else {
            const runs = this.runs || [];
            body = html`
              ${this.failure ? html`<div class="alert alert-danger g-resolver-runs-error">${this.failure}</div>` : ''}
              ${runs.length ? html`
                <table class="table table-condensed g-resolver-runs">
                  <thead><tr><th>Status</th><th>Command</th><th>Site</th><th>Tool</th><th>Submitted</th>
                    <th>Exit code</th><th>Results</th><th></th></tr></thead>
                  <tbody>${runs.map((run) => this.row(run))}</tbody>
                </table>` : html`<p class="g-resolver-runs-empty">No runs yet. A dataset's <b>Run…</b> button
                  (on its folder or collection page, or its #resolve page) starts one.</p>`}
              ${this.runId ? html`
                <div class="g-resolver-run-detail" data-run-id="${this.runId}">
                  <div class="g-resolver-run-detail-head">${this.detailHead()}</div>
                  <pre class="g-resolver-run-log"></pre>
                </div>` : ''}`;
        }
        this.$el.html(html`
          <div class="g-resolver-runs-page">
            <div class="g-body-title"><i class="icon-play"></i> My runs</div>
            ${body}
          </div>`.toString());
        this.renderLog();
        return this;
    },
});

export default RunsView;
