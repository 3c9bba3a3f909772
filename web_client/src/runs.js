// Batch runs: submitting one for a dataset, following its status and log.
//
// A dataset of this site runs with POST /run?folderId=; one held by another site
// through the resolver, POST /resolve/run?id=&site= (the resolver asks that site on
// the person's behalf and keeps a record here that follows it). Both answer a run,
// followed with GET /run/{id} and GET /run/{id}/log on this server.

import * as api from './api';
import { safeNotebookUrl } from './notebooks';

export const LIVE_RUN = new Set(['queued', 'running']);
export const POLL_INTERVAL_MS = 1000;

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Submit a run for ``target`` (a launch target, see notebooks.launchTarget). */
export function submitRun(target, run) {
    if (target.local) {
        return api.startLocalRun(target.folderId, run);
    }
    return api.startRemoteRun(target.identifier, target.explicit ? target.site : null, run);
}

export function isLiveRun(run) {
    return Boolean(run) && LIVE_RUN.has(run.status);
}

/**
 * Where a run's results can be seen, as a link: a results folder of this server, or
 * the results folder at the site that ran it. A URL from a site is checked here again
 * (http(s) only; the resolver already refuses others), so a ``javascript:`` URL never
 * becomes a link. Null when there is nothing (yet) to link to.
 */
export function resultsLink(run) {
    if (!run) {
        return null;
    }
    if (run.resultsFolderId && !run.remoteId) {
        // A run of this server: its results folder, here.
        return `#folder/${encodeURIComponent(run.resultsFolderId)}`;
    }
    return run.resultsUrl ? safeNotebookUrl(run.resultsUrl) : null;
}

/**
 * Follow a run's log from byte ``offset``: each new piece of text goes to ``onText``,
 * each new state of the run to ``onRun``. While the run is queued or running the log is
 * read again (the server streams it while the run runs; a read that ends early is
 * picked up again after a moment). Resolves with the run once it ended and its log is
 * read to the end; ``signal`` (an AbortSignal) stops following.
 */
export async function followRun(run, { onText = () => {}, onRun = () => {}, signal, offset = 0 } = {}) {
    const decoder = new TextDecoder();
    let current = run;
    let position = offset;
    const read = async () => {
        await api.streamRunLog(current._id, position, (bytes) => {
            position += bytes.length;
            onText(decoder.decode(bytes, { stream: true }));
        }, signal);
    };
    for (;;) {
        if (signal && signal.aborted) {
            return current;
        }
        const wasLive = isLiveRun(current);
        try {
            await read();
        } catch (err) {
            if (signal && signal.aborted) {
                return current;
            }
            // No log yet (a queued run at a site), or a passing failure: the status says more.
        }
        current = await api.getRun(current._id);
        onRun(current);
        if (!wasLive && !isLiveRun(current)) {
            return current;
        }
        if (!isLiveRun(current)) {
            // It just ended: one more read gets what it wrote last.
            try {
                await read();
            } catch (err) {
                // Nothing more to show.
            }
            onText(decoder.decode());
            return current;
        }
        await sleep(POLL_INTERVAL_MS);
    }
}
