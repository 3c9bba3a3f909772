// The user's notebooks, as far as this page knows them, and the one function
// that launches one and follows it until it runs.
//
// A dataset of this site is launched with POST /notebook?folderId=; one held by
// another site through the resolver, POST /resolve/launch?id=&site= (the
// resolver asks that site on the user's behalf). Both answer a notebook, and
// both are followed with GET /notebook/{id} on this server while they start.
// launchNotebook() hides the difference.

import * as api from './api';

const { getCurrentUser } = girder.auth;
const events = girder.events;

export const POLL_INTERVAL_MS = 1000;
/** Give up following a launch after this long; the server keeps its own timeout. */
export const LAUNCH_TIMEOUT_MS = 10 * 60 * 1000;

const LIVE = new Set(['launching', 'running', 'stopping']);

export class LaunchError extends Error {
    constructor(message, notebook) {
        super(message);
        this.notebook = notebook;
    }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * The tool menu for a dataset: ``tools`` (``[{id, name, ready, reason}]``, each
 * tool once) and the one preselected: ``recommended`` if it is ready, else the
 * default, else the first ready one. ``offers`` are lists of tools (one per
 * location, as GET /resolve gives them, or this site's GET /resolver/tool); a tool
 * is ready if any of them has it ready. ``unready``: the reason shown for a tool
 * that is not ready and came without one (a site registers no reasons).
 */
export function toolMenu(offers, recommended, unready = 'its environment is missing') {
    const byId = new Map();
    (offers || []).forEach((tools) => (tools || []).forEach((tool) => {
        const seen = byId.get(tool.id);
        if (!seen) {
            byId.set(tool.id, { ...tool, ready: Boolean(tool.ready), reason: tool.ready ? null : (tool.reason || unready) });
        } else if (tool.ready && !seen.ready) {
            byId.set(tool.id, { ...seen, ready: true, reason: null });
        } else if (tool.default) {
            seen.default = true;
        }
    }));
    const tools = [...byId.values()];
    const ready = tools.filter((t) => t.ready);
    const chosen = ready.find((t) => t.id === recommended) || ready.find((t) => t.default) || ready[0];
    return { tools, tool: chosen ? chosen.id : null, recommended: recommended || null };
}

/**
 * Where a launch goes: a location of GET /resolve (``{site, folderId, local}``)
 * and the identifier, which a launch at another site goes by. ``explicit``: the
 * person chose that site, so the launch goes there or fails (no failover).
 * ``menu`` (see toolMenu): the tools to choose from and the one chosen.
 */
export function launchTarget(location, identifier, explicit = false, menu = null) {
    return {
        local: Boolean(location.local),
        site: location.site,
        folderId: location.folderId,
        identifier,
        explicit,
        tools: menu ? menu.tools : [],
        tool: menu ? menu.tool : null,
        recommended: menu ? menu.recommended : null,
    };
}

/** One key per dataset copy and tool: notebooks carry the same three fields. */
export function targetKey(target) {
    return `${target.site}/${target.folderId}/${target.tool || ''}`;
}

/**
 * Launch (or reuse) the caller's notebook for ``target`` and follow it until it
 * runs. ``onUpdate(notebook)`` sees every state on the way (its ``message`` is
 * the current step). Resolves with the running notebook; rejects with a
 * LaunchError (status ``error``, stopped, timeout) or an api.RestError.
 */
export async function launchNotebook(target, { onUpdate = () => {}, interval = POLL_INTERVAL_MS } = {}) {
    const started = target.local
        ? api.startLocalNotebook(target.folderId, target.tool)
        // Only a site the person chose is named: otherwise the resolver may fail over to
        // another site holding the data when its first choice does not answer (one that
        // offers the chosen tool).
        : api.startRemoteNotebook(target.identifier, target.explicit ? target.site : null, target.tool);
    return followNotebook(await started, { onUpdate, interval });
}

/**
 * Follow a launching notebook (just launched, or found launching on page load) with
 * GET /notebook/{id} until it runs; resolves and rejects as launchNotebook().
 */
export async function followNotebook(notebook, { onUpdate = () => {}, interval = POLL_INTERVAL_MS } = {}) {
    const deadline = Date.now() + LAUNCH_TIMEOUT_MS;
    let nb = notebook;
    for (;;) {
        onUpdate(nb);
        if (nb.status === 'running' && nb.url) {
            return nb;
        }
        if (nb.status === 'error') {
            throw new LaunchError(nb.message || 'The notebook could not be started.', nb);
        }
        if (nb.status === 'stopping' || nb.status === 'stopped') {
            throw new LaunchError('The notebook was stopped before it was ready.', nb);
        }
        if (Date.now() > deadline) {
            throw new LaunchError('The notebook is taking too long to start; try again later.', nb);
        }
        await sleep(interval);
        nb = await api.getNotebook(nb._id);
    }
}

/**
 * What the page knows of the user's notebooks, keyed by launch target, with
 * subscribers. Views re-render from it, so a launch in progress survives a
 * re-render of the page around it, and two views of one dataset agree.
 */
class NotebookStore {
    constructor() {
        this.states = new Map();
        this.listeners = new Set();
    }

    get(key) {
        return this.states.get(key) || { notebook: null, busy: false, error: null };
    }

    set(key, patch) {
        this.states.set(key, { ...this.get(key), ...patch });
        this.listeners.forEach((fn) => fn(key));
    }

    subscribe(fn) {
        this.listeners.add(fn);
        return () => this.listeners.delete(fn);
    }

    clear() {
        this.states.clear();
        this.listeners.forEach((fn) => fn(null));
    }

    /** Load the user's notebooks and follow any still launching or stopping. */
    async refresh() {
        const user = getCurrentUser();
        if (!user) {
            return;
        }
        let notebooks;
        try {
            notebooks = await api.listNotebooks({
                userId: user.id, limit: 200, sort: 'created', sortdir: -1,
            });
        } catch (err) {
            return; // Not readable just now: keep showing Launch.
        }
        const newest = new Map();
        (notebooks || []).forEach((nb) => {
            const key = targetKey(nb);
            const seen = newest.get(key);
            if (!seen || String(nb.created || '') > String(seen.created || '')) {
                newest.set(key, nb);
            }
        });
        newest.forEach((nb, key) => {
            const state = this.get(key);
            if (state.busy) {
                return;
            }
            if (LIVE.has(nb.status) || nb.status === 'error') {
                this.set(key, {
                    notebook: nb,
                    error: nb.status === 'error' ? (nb.message || 'The notebook could not be started.') : null,
                });
                if (nb.status === 'launching') {
                    this._follow(key, followNotebook(nb, { onUpdate: (n) => this.set(key, { notebook: n }) }));
                } else if (nb.status === 'stopping') {
                    this._watchStop(key, nb);
                }
            } else if (state.notebook && state.notebook._id === nb._id) {
                this.set(key, { notebook: null });
            }
        });
    }

    /** Launch for ``target`` unless a launch is already under way; resolves with the notebook. */
    launch(target) {
        const key = targetKey(target);
        const state = this.get(key);
        if (state.busy && state.promise) {
            return state.promise;
        }
        this.set(key, { busy: true, error: null, notebook: null });
        const promise = launchNotebook(target, { onUpdate: (nb) => this.set(key, { notebook: nb }) });
        return this._follow(key, promise);
    }

    _follow(key, promise) {
        const tracked = promise.then((nb) => {
            this.set(key, { busy: false, notebook: nb, error: null, promise: null });
            return nb;
        }, (err) => {
            this.set(key, { busy: false, error: err.message, promise: null });
            throw err;
        });
        this.set(key, { busy: true, promise: tracked });
        tracked.catch(() => {}); // Shown through the store; callers may also catch.
        return tracked;
    }

    /** Stop the notebook of ``key`` and follow it until it is gone. */
    async stop(key) {
        const { notebook } = this.get(key);
        if (!notebook) {
            return;
        }
        this.set(key, { busy: true, error: null, notebook: { ...notebook, status: 'stopping', message: 'Stopping the notebook' } });
        try {
            await this._watchStop(key, await api.stopNotebook(notebook._id));
        } catch (err) {
            this.set(key, { busy: false, error: err.message, notebook });
        }
    }

    async _watchStop(key, notebook) {
        let nb = notebook;
        const deadline = Date.now() + 60 * 1000;
        while (nb && nb.status === 'stopping' && Date.now() < deadline) {
            this.set(key, { busy: true, notebook: nb });
            await sleep(POLL_INTERVAL_MS);
            try {
                nb = await api.getNotebook(nb._id);
            } catch (err) {
                nb = null; // Gone: stopped and removed.
            }
        }
        this.set(key, { busy: false, notebook: nb && LIVE.has(nb.status) && nb.status !== 'stopping' ? nb : null });
    }
}

export const notebooks = new NotebookStore();

// Another user, another set of notebooks.
events.on('g:login', () => notebooks.clear());
events.on('g:logout', () => notebooks.clear());

/**
 * ``url`` if a browser may be sent there for a notebook: http(s) only. The
 * resolver already refuses anything else from a site; this checks again, here,
 * so that a ``javascript:`` or ``data:`` URL can never run in this page.
 */
export function safeNotebookUrl(url) {
    if (typeof url !== 'string' || !url) {
        return null;
    }
    try {
        const parsed = new URL(url, window.location.href);
        return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
    } catch (err) {
        return null;
    }
}

export function isLive(nb) {
    return Boolean(nb) && LIVE.has(nb.status);
}
