// The plugin's settings page (#plugins/resolver/config), linked from Girder's plugin list.

import * as api from '../api';
import { html } from '../html';

const View = girder.views.View;
const PluginConfigBreadcrumbWidget = girder.views.widgets.PluginConfigBreadcrumbWidget;
const events = girder.events;

/** Every setting the page edits, grouped as the page shows them; help beside each. */
export const SETTING_GROUPS = [
    {
        title: 'This site',
        fields: [
            { key: 'resolver.site_name', label: 'Site name', type: 'text',
              help: 'This site\'s name in the federation; its own datasets carry it.' },
            { key: 'resolver.site_api_url', label: 'Public API URL', type: 'text',
              help: 'The API URL the central resolver hands out for this site, e.g. https://data.example.org/api/v1. Empty: derived from requests.' },
            { key: 'resolver.identifier_key', label: 'Identifier metadata key', type: 'text',
              help: 'Folder metadata key that carries a dataset\'s identifier (a string or a list).' },
        ],
    },
    {
        title: 'Federation',
        fields: [
            { key: 'resolver.heartbeat_ttl', label: 'Heartbeat lifetime (seconds)', type: 'number',
              help: 'A site stops counting as healthy this long after its last heartbeat.' },
            { key: 'resolver.registrar_group', label: 'Registrar group', type: 'text',
              help: 'Members of this Girder group may register sites (admins always may). Empty: admins only.' },
        ],
    },
    {
        title: 'Notebooks',
        fields: [
            { key: 'resolver.backend', label: 'Launcher backend', type: 'select',
              options: [
                  ['process', 'process: a jupyter_server process on this machine'],
                  ['docker', 'docker: a container through the Docker API'],
              ],
              help: 'How notebooks are started at this site.' },
            { key: 'resolver.image', label: 'Notebook image', type: 'text',
              help: 'Container image of the docker backend.' },
            { key: 'resolver.memory_limit', label: 'Memory limit', type: 'text',
              help: 'Memory of one notebook container, e.g. 1g; its scratch home counts against it.' },
            { key: 'resolver.cpu_limit', label: 'CPU limit', type: 'text',
              help: 'CPUs one notebook container may use, e.g. 1.5. 0: no limit.' },
            { key: 'resolver.pids_limit', label: 'Process limit', type: 'number',
              help: 'Processes and threads one notebook container may hold (at least 32); bounds a fork bomb. 0: no limit.' },
            { key: 'resolver.notebook_host', label: 'Notebook host', type: 'text',
              help: 'Host name or address put in the notebook URLs handed to browsers.' },
            { key: 'resolver.idle_timeout', label: 'Idle timeout (seconds)', type: 'number',
              help: 'A notebook idle this long is stopped.' },
            { key: 'resolver.max_age', label: 'Maximum age (seconds)', type: 'number',
              help: 'A notebook is stopped this long after it started, whatever its activity. 0: never.' },
            { key: 'resolver.user_cap', label: 'Notebooks per person', type: 'number',
              help: 'How many live notebooks one person may hold at this site.' },
            { key: 'resolver.pool_size', label: 'Warm pool size', type: 'number',
              help: 'Unclaimed notebooks kept ready so a launch is near instant. 0: no pool.' },
        ],
    },
];

export const SETTING_KEYS = SETTING_GROUPS.flatMap((g) => g.fields.map((f) => f.key));

function fieldId(key) {
    return `g-${key.replace(/[._]/g, '-')}`;
}

function fieldHtml(field, value) {
    const id = fieldId(field.key);
    let input;
    if (field.type === 'select') {
        const options = field.options.slice();
        if (value && !options.some(([v]) => v === value)) {
            options.push([value, value]);
        }
        input = html`
          <select id="${id}" class="form-control input-sm" data-key="${field.key}">
            ${options.map(([v, label]) => html`<option value="${v}"${v === value ? ' selected' : ''}>${label}</option>`)}
          </select>`;
    } else {
        input = html`<input id="${id}" class="form-control input-sm" data-key="${field.key}"
            type="${field.type === 'number' ? 'number' : 'text'}" value="${value ?? ''}">`;
    }
    return html`
      <div class="form-group g-resolver-setting" data-key="${field.key}">
        <label class="control-label" for="${id}">${field.label}</label>
        ${input}
        <p class="help-block g-resolver-setting-error" role="alert"></p>
        <p class="help-block g-resolver-setting-help">${field.help} <code>${field.key}</code></p>
      </div>`;
}

/** The value to send for what the form holds: whole numbers as numbers. */
function typedValue(field, text) {
    if (field.type === 'number' && /^\s*-?\d+\s*$/.test(text)) {
        return parseInt(text, 10);
    }
    return text;
}

const ConfigView = View.extend({
    events: {
        'submit .g-resolver-settings-form': function (event) {
            event.preventDefault();
            this.save();
        },
    },

    initialize() {
        this.values = null;
        this.loadError = null;
        api.getSettings(SETTING_KEYS).then((values) => {
            this.values = values;
        }, (err) => {
            this.loadError = err;
        }).then(() => this.render());
        this.render();
    },

    render() {
        let body;
        if (this.loadError) {
            body = html`<div class="alert alert-danger g-resolver-settings-load-error">
                Could not read the settings: ${this.loadError.message}</div>`;
        } else if (!this.values) {
            body = html`<p><i class="icon-spin3 animate-spin"></i> Loading settings…</p>`;
        } else {
            body = html`
              <form class="g-resolver-settings-form" role="form" novalidate>
                ${SETTING_GROUPS.map((group) => html`
                  <div class="g-settings-form-container">
                    <h4>${group.title}</h4>
                    ${group.fields.map((field) => fieldHtml(field, this.values[field.key]))}
                  </div>`)}
                <p class="g-validation-failed-message g-resolver-settings-error" role="alert"></p>
                <button type="submit" class="btn btn-sm btn-primary g-resolver-settings-save">
                  <i class="icon-floppy"></i> Save
                </button>
                <a class="btn btn-sm btn-default" href="#resolver/federation"><i class="icon-globe"></i> Federation</a>
              </form>`;
        }
        this.$el.html(html`
          <div class="g-resolver-config">
            <div class="g-config-breadcrumb-container"></div>
            <p class="g-resolver-config-intro">Data DNS resolves dataset identifiers to notebooks next to the data.
               These settings apply to this server; other sites of the federation have their own.</p>
            ${body}
          </div>`.toString());
        if (!this.breadcrumb) {
            this.breadcrumb = new PluginConfigBreadcrumbWidget({
                pluginName: 'Data DNS resolver',
                parentView: this,
            });
        }
        this.breadcrumb.setElement(this.$('.g-config-breadcrumb-container')).render();
        return this;
    },

    /**
     * Save what changed, one setting per request, so that a value the server refuses is
     * shown beside its own field while the others are kept.
     */
    async save() {
        const fields = SETTING_GROUPS.flatMap((g) => g.fields);
        const changed = [];
        fields.forEach((field) => {
            const text = String(this.$(`[data-key="${field.key}"].form-control`).val() ?? '');
            const value = typedValue(field, text);
            if (String(value) !== String(this.values[field.key] ?? '')) {
                changed.push({ field, value });
            }
        });
        this.$('.g-resolver-setting').removeClass('has-error');
        this.$('.g-resolver-setting-error').text('');
        this.$('.g-resolver-settings-error').text('');
        if (!changed.length) {
            events.trigger('g:alert', { icon: 'ok', text: 'Nothing to save.', type: 'info', timeout: 3000 });
            return;
        }
        const button = this.$('.g-resolver-settings-save').girderEnable(false);
        const failed = [];
        for (const { field, value } of changed) {
            try {
                await api.putSettings([{ key: field.key, value }]);
                this.values[field.key] = value;
            } catch (err) {
                failed.push(field);
                const group = this.$(`.g-resolver-setting[data-key="${field.key}"]`).addClass('has-error');
                group.find('.g-resolver-setting-error').text(err.message);
            }
        }
        button.girderEnable(true);
        if (failed.length) {
            const saved = changed.length - failed.length;
            this.$('.g-resolver-settings-error').text(
                `${failed.map((f) => f.label).join(', ')}: not saved, see above.` +
                (saved ? ` ${saved} other setting${saved > 1 ? 's were' : ' was'} saved.` : ''));
        } else {
            events.trigger('g:alert', { icon: 'ok', text: 'Settings saved.', type: 'success', timeout: 4000 });
        }
        // Show what the server keeps (validators normalise values).
        api.getSettings(changed.map((c) => c.field.key)).then((values) => {
            Object.assign(this.values, values);
            Object.entries(values).forEach(([key, value]) => {
                if (!failed.some((f) => f.key === key)) {
                    this.$(`[data-key="${key}"].form-control`).val(value ?? '');
                }
            });
        }, () => {});
    },
});

export default ConfigView;
