// Launch / Open / Stop for one dataset, with live status while a launch runs, and
// the menu of tools to launch it with (the dataset's recommendation preselected; a
// tool that is not ready is shown disabled, with its reason).
// Used on collection and folder pages and on the #resolve page.

import { html } from '../html';
import { notebooks, safeNotebookUrl, targetKey } from '../notebooks';

const { getCurrentUser } = girder.auth;
const events = girder.events;

const STEP_DEFAULTS = {
    launching: 'Starting your notebook',
    stopping: 'Stopping the notebook',
};

export function statusLine(nb) {
    if (!nb) {
        return '';
    }
    return nb.message || STEP_DEFAULTS[nb.status] || '';
}

export default class NotebookControls {
    /**
     * @param {HTMLElement} el where to render
     * @param {object} target a launch target (see notebooks.launchTarget)
     * @param {object} [opts]
     * @param {string} [opts.openTarget='_blank'] where Open opens the notebook
     * @param {function} [opts.onRunning] called once with the notebook when a launch from
     *     here reaches "running" (the #resolve page navigates to it)
     */
    constructor(el, target, opts = {}) {
        this.el = el;
        this.target = target;
        this.key = targetKey(target);
        this.openTarget = opts.openTarget || '_blank';
        this.onRunning = opts.onRunning;
        this.el.classList.add('g-resolver-controls');
        this.el.dataset.target = this.key;
        this.el.addEventListener('click', (event) => this._click(event));
        this.el.addEventListener('change', (event) => {
            if (event.target.classList.contains('g-resolver-tool')) {
                this.chooseTool(event.target.value);
            }
        });
        this.unsubscribe = notebooks.subscribe((key) => {
            if (!this.el.isConnected) {
                this.unsubscribe();
                return;
            }
            if (key === null || key === this.key) {
                this.render();
            }
        });
    }

    _click(event) {
        const button = event.target.closest('[data-action]');
        if (!button || !this.el.contains(button)) {
            return;
        }
        const action = button.dataset.action;
        if (action === 'login') {
            event.preventDefault();
            events.trigger('g:loginUi');
        } else if (action === 'launch') {
            event.preventDefault();
            this.launch();
        } else if (action === 'stop') {
            event.preventDefault();
            notebooks.stop(this.key);
        }
    }

    /** Launch (and show) the notebook of tool ``id`` for this dataset from now on. */
    chooseTool(id) {
        const tool = (this.target.tools || []).find((t) => t.id === id && t.ready);
        if (!tool) {
            return;
        }
        this.target = { ...this.target, tool: tool.id };
        this.key = targetKey(this.target);
        this.el.dataset.target = this.key;
        this.render();
    }

    toolMenu(disabled) {
        const tools = this.target.tools || [];
        if (!tools.length) {
            return '';
        }
        const unready = tools.filter((t) => !t.ready);
        return html`
          <span class="g-resolver-tool-menu">
            <label class="g-resolver-tool-label">Tool
              <select class="g-resolver-tool form-control input-sm" ${disabled ? 'disabled' : ''}
                  title="What the notebook runs">
                ${tools.map((t) => html`
                  <option value="${t.id}" ${t.id === this.target.tool ? 'selected' : ''}
                      ${t.ready ? '' : 'disabled'} title="${t.ready ? (t.description || t.name) : (t.reason || 'Not ready here')}"
                      >${t.name}${t.id === this.target.recommended ? ' (recommended)' : ''}${t.ready ? '' : ' (not ready)'}</option>`)}
              </select>
            </label>
            ${unready.length ? html`
              <span class="g-resolver-tool-unready text-muted">
                ${unready.map((t) => html`<span class="g-resolver-tool-reason" data-tool="${t.id}"
                    title="${t.reason || ''}"><b>${t.name}</b> is not ready: ${t.reason || 'its environment is missing'} </span>`)}
              </span>` : ''}
          </span>`;
    }

    launch() {
        if (!getCurrentUser()) {
            events.trigger('g:loginUi');
            return Promise.resolve(null);
        }
        const promise = notebooks.launch(this.target);
        promise.then((nb) => {
            if (this.onRunning && this.el.isConnected) {
                this.onRunning(nb);
            }
        }, () => {});
        return promise;
    }

    render() {
        const state = notebooks.get(this.key);
        const nb = state.notebook;
        let body;
        if (!getCurrentUser()) {
            body = html`
              <button class="btn btn-sm btn-default g-resolver-login" data-action="login"
                  title="Log in to launch a notebook next to this data">
                <i class="icon-login"></i> Log in to launch
              </button>`;
        } else if (nb && nb.status === 'running' && safeNotebookUrl(nb.url)) {
            body = html`
              <a class="btn btn-sm btn-primary g-resolver-open" href="${safeNotebookUrl(nb.url)}"
                  target="${this.openTarget}" rel="noopener" title="Open your notebook">
                <i class="icon-link-ext"></i> Open
              </a>
              <button class="btn btn-sm btn-default g-resolver-stop" data-action="stop"
                  title="Stop your notebook and release what it holds">
                <i class="icon-stop"></i> Stop
              </button>`;
        } else if (nb && (nb.status === 'launching' || nb.status === 'stopping')) {
            const label = nb.status === 'launching' ? 'Launching' : 'Stopping';
            body = html`
              <span class="g-resolver-status g-resolver-status-${nb.status}" role="status">
                <i class="icon-spin3 animate-spin"></i>
                <b>${label}</b>
                <span class="g-resolver-progress-message">${statusLine(nb)}</span>
              </span>`;
        } else if (state.busy) {
            body = html`
              <span class="g-resolver-status g-resolver-status-launching" role="status">
                <i class="icon-spin3 animate-spin"></i>
                <b>Launching</b>
                <span class="g-resolver-progress-message">Asking the server for a notebook</span>
              </span>`;
        } else {
            body = html`
              <button class="btn btn-sm btn-success g-resolver-launch" data-action="launch"
                  title="Start a Jupyter notebook with this dataset mounted read-only">
                <i class="icon-rocket"></i> Launch
              </button>`;
        }
        const error = state.error && !state.busy ? html`
              <div class="g-resolver-error text-danger" role="alert">
                <i class="icon-attention"></i> ${state.error}
              </div>` : '';
        const noTool = (this.target.tools || []).length && !this.target.tool;
        if (noTool && getCurrentUser() && !nb && !state.busy) {
            body = html`<span class="g-resolver-no-tool text-warning">No tool is ready here to launch this dataset with.</span>`;
        }
        const menu = this.toolMenu(state.busy || (nb && nb.status !== 'error'));
        this.el.innerHTML = html`${menu}${body}${error}`.toString();
        return this;
    }
}
