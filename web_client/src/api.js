// Every REST call of the plugin, on top of Girder's restRequest (which adds the
// API root and the Girder token). Calls return native promises and reject with
// a RestError that carries the server's message, so views can say what went wrong.

const { restRequest } = girder.rest;
const $ = girder.$;

export class RestError extends Error {
    constructor(xhr) {
        const body = (xhr && xhr.responseJSON) || {};
        let message = body.message;
        if (!message) {
            message = xhr && xhr.status === 0
                ? 'The server could not be reached.'
                : `The server answered ${xhr ? xhr.status : '?'} ${(xhr && xhr.statusText) || ''}`.trim();
        }
        super(message);
        this.status = xhr ? xhr.status : 0;
        this.field = body.field;
        this.body = body;
    }
}

/**
 * One request. Parameters go in the query string for every method (Girder reads
 * them there; the contract is written that way), and Girder's own error alert is
 * switched off: callers show errors where they belong.
 */
export function request({ method = 'GET', url, params, headers, form }) {
    const query = params ? $.param(dropEmpty(params)) : '';
    const options = {
        method,
        url: query ? `${url}?${query}` : url,
        headers,
        dataType: 'json',
        error: null,
    };
    if (form) {
        // Long values (a script's text) go in a form-encoded body, which Girder reads
        // like the query string.
        options.data = dropEmpty(form);
        options.contentType = 'application/x-www-form-urlencoded; charset=UTF-8';
    }
    return new Promise((resolve, reject) => {
        restRequest(options).done((body) => resolve(body)).fail((xhr) => reject(new RestError(xhr)));
    });
}

function dropEmpty(params) {
    const out = {};
    Object.entries(params).forEach(([key, value]) => {
        if (value !== undefined && value !== null && value !== '') {
            out[key] = value;
        }
    });
    return out;
}

// Datasets -------------------------------------------------------------------------

export function listDatasets(params) {
    return request({ url: 'resolver/dataset', params: { limit: 0, ...params } });
}

// Resolution -----------------------------------------------------------------------

/** GET /resolve as an API client: JSON, never the browser redirect. */
export function resolveIdentifier(id, site) {
    return request({ url: 'resolve', params: { id, site }, headers: { Accept: 'application/json' } });
}

// Notebooks --------------------------------------------------------------------------

export function listNotebooks(params) {
    return request({ url: 'notebook', params: { limit: 0, ...params } });
}

export function getNotebook(id) {
    return request({ url: `notebook/${encodeURIComponent(id)}` });
}

export function startLocalNotebook(folderId, tool) {
    const params = tool ? { folderId, tool } : { folderId };
    return request({ method: 'POST', url: 'notebook', params });
}

export function startRemoteNotebook(identifier, site, tool) {
    // No "site" (or "tool") at all unless one is named: an empty one would name none.
    const params = { id: identifier };
    if (site) {
        params.site = site;
    }
    if (tool) {
        params.tool = tool;
    }
    return request({ method: 'POST', url: 'resolve/launch', params });
}

/** GET /resolver/tool: this site's tools, with whether each is ready here. */
export function listTools(folderId) {
    return request({ url: 'resolver/tool', params: folderId ? { folderId } : {} });
}

export function stopNotebook(id) {
    return request({ method: 'DELETE', url: `notebook/${encodeURIComponent(id)}` });
}

// Batch runs ----------------------------------------------------------------------------

/**
 * What a run form sends: ``{command}`` or ``{script}`` (the script's text), ``tool`` (an
 * id, or empty for the site's default) and ``fresh`` (run again even if an identical run
 * succeeded before).
 */
function runForm({ command, script, tool, fresh }) {
    return { command, script, tool, fresh: fresh ? 'true' : undefined };
}

export function startLocalRun(folderId, run) {
    return request({ method: 'POST', url: 'run', params: { folderId }, form: runForm(run) });
}

export function startRemoteRun(identifier, site, run) {
    // As for notebooks: no "site" unless the person chose one, so the resolver may fail over.
    const params = site ? { id: identifier, site } : { id: identifier };
    return request({ method: 'POST', url: 'resolve/run', params, form: runForm(run) });
}

export function listRuns(params) {
    return request({ url: 'run', params: { limit: 50, sort: 'created', sortdir: -1, ...params } });
}

export function getRun(id) {
    return request({ url: `run/${encodeURIComponent(id)}` });
}

export function cancelRun(id) {
    return request({ method: 'DELETE', url: `run/${encodeURIComponent(id)}` });
}

/**
 * Read a run's log from byte ``offset``, handing each piece to ``onBytes(Uint8Array)`` as it
 * arrives (the server streams it while the run runs). Resolves when the answer ends.
 */
export async function streamRunLog(id, offset, onBytes, signal) {
    const url = `${girder.rest.getApiRoot()}/run/${encodeURIComponent(id)}/log?offset=${offset}`;
    const token = girder.auth.getCurrentToken();
    const resp = await fetch(url, {
        headers: token ? { 'Girder-Token': token } : {},
        credentials: 'same-origin',
        signal,
    });
    if (!resp.ok) {
        let body = {};
        try {
            body = await resp.json();
        } catch (err) {
            // Not JSON: the status says enough.
        }
        throw new RestError({ status: resp.status, statusText: resp.statusText, responseJSON: body });
    }
    const reader = resp.body.getReader();
    for (;;) {
        const { done, value } = await reader.read();
        if (done) {
            return;
        }
        onBytes(value);
    }
}

// Settings and sites ------------------------------------------------------------------

/** Every setting of the plugin (admins): what it is, its help text, its current value. */
export function listPluginSettings() {
    return request({ url: 'resolver/setting' });
}

export function putSettings(list) {
    return request({ method: 'PUT', url: 'system/setting', params: { list: JSON.stringify(list) } });
}

export function listSites() {
    return request({ url: 'resolver/site', params: { limit: 0 } });
}

export function getFolder(id) {
    return request({ url: `folder/${encodeURIComponent(id)}` });
}
