// The plugin's pages: #resolve, #resolver/federation and the settings page.

import ConfigView from './views/ConfigView';
import FederationView from './views/FederationView';
import ResolveView from './views/ResolveView';
import RunsView from './views/RunsView';

const router = girder.router;
const events = girder.events;
const { exposePluginConfig } = girder.utilities.PluginUtils;
const { parseQueryString } = girder.misc;

exposePluginConfig('resolver', 'plugins/resolver/config');

router.route('plugins/resolver/config', 'resolverConfig', () => {
    events.trigger('g:navigateTo', ConfigView);
});

router.route('resolver/federation', 'resolverFederation', () => {
    events.trigger('g:navigateTo', FederationView);
});

router.route('runs', 'resolverRuns', () => {
    events.trigger('g:navigateTo', RunsView, {});
});

router.route('runs/:id', 'resolverRun', (id) => {
    events.trigger('g:navigateTo', RunsView, { runId: id });
});

// On login Girder re-runs the current route without its query string; the
// #resolve page keeps its query here so the visitor comes back to the same page.
let returnQuery = null;

events.on('g:login', () => {
    const fragment = girder.Backbone.history.fragment || '';
    const match = fragment.match(/^resolve\?(.*)$/);
    returnQuery = null;
    if (match) {
        // Girder's dialogs add ?dialog=login; that is not part of the page.
        const query = parseQueryString(match[1]);
        delete query.dialog;
        delete query.dialogid;
        returnQuery = girder.$.param(query);
    }
});

router.route('resolve', 'resolve', (query) => {
    let params = query || {};
    if (!params.id && returnQuery) {
        params = parseQueryString(returnQuery);
        router.navigate(`resolve?${returnQuery}`, { replace: true });
    }
    returnQuery = null;
    events.trigger('g:navigateTo', ResolveView, { query: params });
});
