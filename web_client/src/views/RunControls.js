// The Run action of one dataset: a button that opens a small form (tool, command or
// script, "run again"), submits a batch run next to the data and links to it on the
// "My runs" page. Used on collection and folder pages and on the #resolve page.

import * as api from '../api';
import { html } from '../html';
import { submitRun } from '../runs';

const { getCurrentUser } = girder.auth;

let toolsPromise = null;

/** The site's tools, asked once per page load; [] when the server lists none. */
function tools() {
    if (!toolsPromise) {
        toolsPromise = api.listTools().then((list) => (Array.isArray(list) ? list : []), () => []);
    }
    return toolsPromise;
}

export default class RunControls {
    /**
     * @param {HTMLElement} el where to render the Run button
     * @param {object} target a launch target (see notebooks.launchTarget)
     * @param {object} [opts]
     * @param {HTMLElement} [opts.panel] where the form and its outcome go (default: ``el``)
     */
    constructor(el, target, opts = {}) {
        this.buttonEl = el;
        this.el = opts.panel || el;
        this.target = target;
        this.open = false;
        this.busy = false;
        this.error = null;
        this.submitted = null;
        this.tools = [];
        this.el.classList.add('g-resolver-run-controls');
        this.buttonEl.classList.add('g-resolver-run-controls');
        this.buttonEl.addEventListener('click', (event) => this._click(event));
        if (this.el !== this.buttonEl) {
            this.el.addEventListener('click', (event) => this._click(event));
        }
        this.el.addEventListener('change', (event) => {
            if (event.target.name === 'g-resolver-run-kind') {
                this._showKind(event.target.value);
            }
        });
        this.el.addEventListener('submit', (event) => {
            event.preventDefault();
            this.submit();
        });
    }

    _click(event) {
        const button = event.target.closest('[data-run-action]');
        if (!button || !event.currentTarget.contains(button)) {
            return;
        }
        event.preventDefault();
        if (button.dataset.runAction === 'open') {
            this.open = !this.open;
            this.submitted = null;
            this.error = null;
            if (this.open && Array.isArray(this.target.tools)) {
                // The tools the dataset's panel (or its location of GET /resolve) lists.
                this.tools = this.target.tools;
            } else if (this.open) {
                tools().then((list) => {
                    this.tools = list;
                    if (this.open && this.el.isConnected) {
                        // Keep what was typed meanwhile.
                        const values = this.el.querySelector('form') ? this.values() : {};
                        this.render({ ...values, tool: values.tool || this.target.tool });
                    }
                });
            }
            this.render();
        } else if (button.dataset.runAction === 'cancel') {
            this.open = false;
            this.render();
        }
    }

    _showKind(kind) {
        this.el.querySelector('.g-resolver-run-command').hidden = kind !== 'command';
        this.el.querySelector('.g-resolver-run-script').hidden = kind !== 'script';
    }

    /** What the form says, as api.startLocalRun/startRemoteRun take it. */
    values() {
        const form = this.el.querySelector('form');
        const kind = form.querySelector('input[name="g-resolver-run-kind"]:checked').value;
        const run = {
            tool: form.querySelector('.g-resolver-run-tool').value,
            fresh: form.querySelector('.g-resolver-run-fresh').checked,
        };
        if (kind === 'command') {
            run.command = form.querySelector('.g-resolver-run-command textarea').value.trim();
        } else {
            run.script = form.querySelector('.g-resolver-run-script textarea').value;
        }
        return run;
    }

    async submit() {
        const run = this.values();
        if (!run.command && !(run.script || '').trim()) {
            this.error = 'Give a command, or the text of a script, to run.';
            this.render(run);
            return;
        }
        this.busy = true;
        this.error = null;
        this.render(run);
        try {
            this.submitted = await submitRun(this.target, run);
            this.open = false;
        } catch (err) {
            this.error = err.message;
        }
        this.busy = false;
        this.render(run);
    }

    renderForm(values = { tool: this.target.tool }) {
        const kind = values.script !== undefined ? 'script' : 'command';
        const choices = this.tools.length
            ? this.tools.map((tool) => html`
                <option value="${tool.id}" ${values.tool === tool.id ? 'selected' : ''}
                    ${tool.ready === false ? 'disabled' : ''}>${tool.name || tool.id}${tool.ready === false ? ' (not ready here)' : ''}</option>`)
            : '';
        return html`
          <form class="g-resolver-run-form">
            <div class="form-group">
              <label>Tool</label>
              <select class="form-control input-sm g-resolver-run-tool">
                <option value="">The site's default</option>
                ${choices}
              </select>
            </div>
            <div class="form-group g-resolver-run-kinds">
              <label class="radio-inline"><input type="radio" name="g-resolver-run-kind" value="command"
                  ${kind === 'command' ? 'checked' : ''}> Command</label>
              <label class="radio-inline"><input type="radio" name="g-resolver-run-kind" value="script"
                  ${kind === 'script' ? 'checked' : ''}> Script</label>
            </div>
            <div class="form-group g-resolver-run-command" ${kind === 'command' ? '' : 'hidden'}>
              <textarea class="form-control input-sm" rows="2" spellcheck="false"
                  placeholder="e.g. ls -l &quot;$DATASET_DIR&quot; > &quot;$RESULTS_DIR/listing.txt&quot;">${values.command || ''}</textarea>
            </div>
            <div class="form-group g-resolver-run-script" ${kind === 'script' ? '' : 'hidden'}>
              <textarea class="form-control input-sm" rows="6" spellcheck="false"
                  placeholder="#!/bin/bash&#10;wc -l &quot;$DATASET_DIR&quot;/*.csv > &quot;$RESULTS_DIR/counts.txt&quot;">${values.script || ''}</textarea>
            </div>
            <p class="help-block">The dataset is read-only at <code>$DATASET_DIR</code>; what the run leaves in
              <code>$RESULTS_DIR</code> becomes its results folder.</p>
            <div class="checkbox"><label><input type="checkbox" class="g-resolver-run-fresh"
                ${values.fresh ? 'checked' : ''}> Run again even if an identical run succeeded before</label></div>
            <button class="btn btn-sm btn-primary g-resolver-run-submit" type="submit" ${this.busy ? 'disabled' : ''}>
              <i class="${this.busy ? 'icon-spin3 animate-spin' : 'icon-play'}"></i> Submit the run
            </button>
            <button class="btn btn-sm btn-default" data-run-action="cancel" type="button">Close</button>
          </form>`;
    }

    render(values) {
        if (!getCurrentUser()) {
            this.el.innerHTML = '';
            this.buttonEl.innerHTML = '';
            return this;
        }
        const run = this.submitted;
        const done = run ? html`
          <div class="g-resolver-run-submitted" role="status">
            <i class="icon-ok"></i>
            ${run.reused ? 'An identical run succeeded before: its results are reused.' : `Run ${run.status}.`}
            <a class="g-resolver-run-follow" href="#runs/${encodeURIComponent(run._id)}">Follow it in My runs</a>
          </div>` : '';
        const error = this.error ? html`
          <div class="g-resolver-run-error text-danger" role="alert"><i class="icon-attention"></i> ${this.error}</div>` : '';
        const button = html`
          <button class="btn btn-sm btn-default g-resolver-run" data-run-action="open"
              title="Run a command or script next to this dataset, as a batch job">
            <i class="icon-play"></i> Run…
          </button>`;
        const panel = html`
          ${done}
          ${this.open ? this.renderForm(values) : ''}
          ${error}`;
        if (this.el === this.buttonEl) {
            this.el.innerHTML = html`${button}${panel}`.toString();
        } else {
            this.buttonEl.innerHTML = button.toString();
            this.el.innerHTML = panel.toString();
        }
        return this;
    }
}
