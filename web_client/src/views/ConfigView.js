// The plugin's settings page (#plugins/resolver/config), linked from Girder's plugin list.
// Which settings there are, their labels, help texts, groups and choices all come from the
// server (GET /resolver/setting, declared once in girder_resolver/settings.py).

import * as api from '../api';
import { html } from '../html';

const View = girder.views.View;
const PluginConfigBreadcrumbWidget = girder.views.widgets.PluginConfigBreadcrumbWidget;
const events = girder.events;

function fieldId(key) {
    return `g-${key.replace(/[._]/g, '-')}`;
}

/** What the form shows for a setting's value. */
function shownValue(setting) {
    if (setting.kind === 'json') {
        return JSON.stringify(setting.value ?? null);
    }
    return setting.value === null || setting.value === undefined ? '' : String(setting.value);
}

function inputHtml(setting) {
    const id = fieldId(setting.key);
    const disabled = setting.editable ? '' : ' disabled';
    const value = shownValue(setting);
    if (setting.kind === 'choice' || setting.kind === 'boolean') {
        const options = setting.kind === 'boolean'
            ? [{ value: 'true', label: 'true' }, { value: 'false', label: 'false' }]
            : setting.choices.slice();
        if (value && !options.some((o) => o.value === value)) {
            options.push({ value, label: value });
        }
        return html`
          <select id="${id}" class="form-control input-sm" data-key="${setting.key}"${disabled}>
            ${options.map((o) => html`<option value="${o.value}"${o.value === value ? ' selected' : ''}>${o.label}</option>`)}
          </select>`;
    }
    if (setting.kind === 'json') {
        return html`<textarea id="${id}" class="form-control input-sm" data-key="${setting.key}"
            rows="2" spellcheck="false"${disabled}>${value}</textarea>`;
    }
    if (setting.kind === 'secret') {
        return html`<input id="${id}" class="form-control input-sm" data-key="${setting.key}"
            type="password" autocomplete="new-password" value=""
            placeholder="${setting.set ? 'Set; type a new one to replace it' : 'Not set'}"${disabled}>
          ${setting.set ? html`<label class="checkbox-inline"><input type="checkbox" class="g-resolver-secret-clear"
            data-key="${setting.key}"> Remove it</label>` : ''}`;
    }
    return html`<input id="${id}" class="form-control input-sm" data-key="${setting.key}"
        type="${setting.kind === 'number' ? 'number' : 'text'}"${setting.kind === 'number' ? ' step="any"' : ''}
        value="${value}"${disabled}>`;
}

function fieldHtml(setting) {
    return html`
      <div class="form-group g-resolver-setting" data-key="${setting.key}">
        <label class="control-label" for="${fieldId(setting.key)}">${setting.label}</label>
        ${inputHtml(setting)}
        <p class="help-block g-resolver-setting-error" role="alert"></p>
        <p class="help-block g-resolver-setting-help">${setting.help} <code>${setting.key}</code></p>
      </div>`;
}

/** The settings in their groups, in the server's order. */
function grouped(settings) {
    const groups = new Map();
    settings.forEach((setting) => {
        if (!groups.has(setting.group)) {
            groups.set(setting.group, []);
        }
        groups.get(setting.group).push(setting);
    });
    return [...groups.entries()];
}

/**
 * What to send for what the form holds, or undefined when it is what the server has.
 * Text the server would refuse is sent as it is, so that the refusal is shown in its words.
 */
function changedValue(setting, text, clear) {
    switch (setting.kind) {
    case 'secret':
        if (clear) {
            return '';
        }
        return text ? text : undefined;
    case 'number': {
        const value = /^\s*-?(\d+\.?\d*|\.\d+)\s*$/.test(text) ? Number(text) : text;
        return String(value) === shownValue(setting) ? undefined : value;
    }
    case 'boolean':
        return text === shownValue(setting) ? undefined : text === 'true';
    case 'json': {
        let value = text;
        try {
            value = JSON.parse(text);
        } catch (err) {
            // Sent as text: the server says what is wrong with it.
        }
        return JSON.stringify(value) === shownValue(setting) ? undefined : value;
    }
    default:
        return text === shownValue(setting) ? undefined : text;
    }
}

const ConfigView = View.extend({
    events: {
        'submit .g-resolver-settings-form': function (event) {
            event.preventDefault();
            this.save();
        },
    },

    initialize() {
        this.settings = null;
        this.loadError = null;
        api.listPluginSettings().then((settings) => {
            this.settings = settings;
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
        } else if (!this.settings) {
            body = html`<p><i class="icon-spin3 animate-spin"></i> Loading settings…</p>`;
        } else {
            body = html`
              <form class="g-resolver-settings-form" role="form" novalidate>
                ${grouped(this.settings).map(([title, settings]) => html`
                  <div class="g-settings-form-container">
                    <h4>${title}</h4>
                    ${settings.map(fieldHtml)}
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
        const changed = [];
        this.settings.filter((s) => s.editable).forEach((setting) => {
            const text = String(this.$(`[data-key="${setting.key}"].form-control`).val() ?? '');
            const clear = this.$(`.g-resolver-secret-clear[data-key="${setting.key}"]`).is(':checked');
            const value = changedValue(setting, text, clear);
            if (value !== undefined) {
                changed.push({ setting, value });
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
        for (const { setting, value } of changed) {
            try {
                await api.putSettings([{ key: setting.key, value }]);
            } catch (err) {
                failed.push(setting);
                const group = this.$(`.g-resolver-setting[data-key="${setting.key}"]`).addClass('has-error');
                group.find('.g-resolver-setting-error').text(err.message);
            }
        }
        button.girderEnable(true);
        if (failed.length) {
            const saved = changed.length - failed.length;
            this.$('.g-resolver-settings-error').text(
                `${failed.map((s) => s.label).join(', ')}: not saved, see above.` +
                (saved ? ` ${saved} other setting${saved > 1 ? 's were' : ' was'} saved.` : ''));
        } else {
            events.trigger('g:alert', { icon: 'ok', text: 'Settings saved.', type: 'success', timeout: 4000 });
        }
        // Show what the server keeps (validators normalise values); a refused field keeps
        // what was typed, to be corrected.
        api.listPluginSettings().then((settings) => {
            const refused = new Set(failed.map((s) => s.key));
            const fresh = new Map(settings.map((s) => [s.key, s]));
            changed.forEach(({ setting }) => {
                const now = fresh.get(setting.key);
                if (!now || refused.has(setting.key)) {
                    return;
                }
                this.settings = this.settings.map((s) => (s.key === now.key ? now : s));
                if (now.kind === 'secret') {
                    this.$(`.g-resolver-setting[data-key="${now.key}"]`).replaceWith(fieldHtml(now).toString());
                } else {
                    this.$(`[data-key="${now.key}"].form-control`).val(shownValue(now));
                }
            });
        }, () => {});
    },
});

export default ConfigView;
