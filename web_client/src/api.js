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
export function request({ method = 'GET', url, params, headers }) {
    const query = params ? $.param(dropEmpty(params)) : '';
    return new Promise((resolve, reject) => {
        restRequest({
            method,
            url: query ? `${url}?${query}` : url,
            headers,
            dataType: 'json',
            error: null,
        }).done((body) => resolve(body)).fail((xhr) => reject(new RestError(xhr)));
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
