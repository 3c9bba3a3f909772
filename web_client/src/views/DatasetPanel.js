// The datasets of a collection page, or the dataset a folder page shows: identifier
// badges and Launch / Open / Stop with live status.

import { listTools, request } from '../api';
import { datasetsOfCollection, datasetsOfFolder, knownDatasets } from '../datasets';
import { html } from '../html';
import { notebooks, toolMenu } from '../notebooks';
import NotebookControls from './NotebookControls';
import RunControls from './RunControls';

const { getCurrentUser } = girder.auth;

/**
 * Resolves once this page knows whether the visitor is logged in.
 *
 * Girder's client may not have its user yet when a page renders (getCurrentUser() is null
 * both for "anonymous" and for "not known yet"), and a panel drawn then would offer a
 * logged-in visitor "Log in to launch". So ask the server who this is; if it names a user,
 * wait (briefly) until Girder's client has that user too.
 */
export function whenLoginKnown({ timeoutMs = 10000 } = {}) {
    if (getCurrentUser()) {
        return Promise.resolve(getCurrentUser());
    }
    return request({ url: 'user/me' }).catch(() => null).then((me) => {
        if (!me) {
            return null;
        }
        const deadline = Date.now() + timeoutMs;
        return new Promise((resolve) => {
            const check = () => {
                if (getCurrentUser() || Date.now() > deadline) {
                    resolve(getCurrentUser());
                } else {
                    setTimeout(check, 50);
                }
            };
            check();
        });
    });
}

export function identifierBadge(identifier, scheme) {
    return html`<a class="g-resolver-identifier label label-info" href="#resolve?id=${encodeURIComponent(identifier)}"
        title="${scheme ? scheme.toUpperCase() + ': ' : ''}${identifier} (show where it resolves)"><i class="icon-tag"></i>${identifier}</a>`;
}

/** Put identifier badges beside the dataset folders of a folder list. */
export function decorateFolderLinks(root) {
    root.querySelectorAll('a.g-folder-list-link').forEach((link) => {
        const folderId = (link.getAttribute('href') || '').replace(/^#folder\//, '');
        const identifiers = knownDatasets.get(folderId);
        const old = link.parentElement.querySelector('.g-resolver-folder-badges');
        if (old) {
            old.remove();
        }
        if (identifiers && identifiers.length) {
            const span = document.createElement('span');
            span.className = 'g-resolver-folder-badges';
            span.innerHTML = identifiers.map((id) => identifierBadge(id).toString()).join(' ');
            link.after(span);
        }
    });
}

function datasetRow(dataset, collectionId) {
    const href = collectionId
        ? `#collection/${collectionId}/folder/${dataset.folderId}`
        : `#folder/${dataset.folderId}`;
    return html`
      <li class="list-group-item g-resolver-dataset" data-folder-id="${dataset.folderId}">
        <div class="g-resolver-dataset-info">
          <a class="g-resolver-dataset-name" href="${href}"><i class="icon-folder"></i>${dataset.name}</a>
          <span class="g-resolver-identifiers">${dataset.identifiers.map((i) => identifierBadge(i.identifier, i.scheme))}</span>
        </div>
        <div class="g-resolver-dataset-buttons">
          <div class="g-resolver-dataset-actions"></div>
          <div class="g-resolver-dataset-run"></div>
        </div>
        <div class="g-resolver-dataset-run-panel"></div>
      </li>`;
}

export default class DatasetPanel {
    /**
     * @param {Backbone.Model} model the collection or folder the page shows
     */
    constructor(model) {
        this.model = model;
        this.type = model.resourceName;
        this.el = document.createElement('div');
        this.el.className = `g-resolver-datasets g-resolver-datasets-${this.type}`;
    }

    async load() {
        const id = this.model.id;
        const [datasets, tools] = await Promise.all([
            this.type === 'collection' ? datasetsOfCollection(id) : datasetsOfFolder(this.model),
            // A server without tools (or that cannot say) gets no menu: its own default runs.
            listTools().catch(() => []),
        ]);
        this.datasets = datasets;
        this.tools = tools || [];
        return datasets;
    }

    render() {
        const datasets = this.datasets || [];
        if (!datasets.length) {
            this.el.innerHTML = '';
            this.el.hidden = true;
            return this;
        }
        this.el.hidden = false;
        const collectionId = this.type === 'collection' ? this.model.id : null;
        if (this.type === 'collection') {
            this.el.innerHTML = html`
              <div class="panel panel-default">
                <div class="panel-heading g-resolver-panel-heading">
                  <i class="icon-database"></i>
                  <b>Datasets in this collection</b>
                  <span class="badge">${datasets.length}</span>
                  <span class="g-resolver-hint">Launch a Jupyter notebook next to the data; the data is mounted read-only.</span>
                </div>
                <ul class="list-group">${datasets.map((d) => datasetRow(d, collectionId))}</ul>
              </div>`.toString();
        } else {
            const [dataset] = datasets;
            this.el.innerHTML = html`
              <div class="panel panel-default">
                <div class="panel-heading g-resolver-panel-heading">
                  <i class="icon-database"></i>
                  <b>This folder is a dataset</b>
                  <span class="g-resolver-hint">Launch a Jupyter notebook next to the data; the data is mounted read-only.</span>
                </div>
                <ul class="list-group">
                  <li class="list-group-item g-resolver-dataset" data-folder-id="${dataset.folderId}">
                    <div class="g-resolver-dataset-info">
                      <span class="g-resolver-identifiers">${dataset.identifiers.map((i) => identifierBadge(i.identifier, i.scheme))}</span>
                    </div>
                    <div class="g-resolver-dataset-buttons">
                      <div class="g-resolver-dataset-actions"></div>
                      <div class="g-resolver-dataset-run"></div>
                    </div>
                    <div class="g-resolver-dataset-run-panel"></div>
                  </li>
                </ul>
              </div>`.toString();
        }
        this.el.querySelectorAll('.g-resolver-dataset').forEach((row) => {
            const dataset = datasets.find((d) => d.folderId === row.dataset.folderId);
            const menu = toolMenu([this.tools], dataset.tool);
            const target = {
                local: true,
                folderId: dataset.folderId,
                site: dataset.site,
                tools: menu.tools,
                tool: menu.tool,
                recommended: menu.recommended,
            };
            new NotebookControls(row.querySelector('.g-resolver-dataset-actions'), target).render();
            new RunControls(row.querySelector('.g-resolver-dataset-run'), target, {
                panel: row.querySelector('.g-resolver-dataset-run-panel'),
            }).render();
        });
        return this;
    }
}

/** Show the panel for ``hierarchy`` (a HierarchyWidget on a collection or folder page). */
export function attachDatasetPanel(hierarchy) {
    const model = hierarchy.parentModel;
    if (!model || !['collection', 'folder'].includes(model.resourceName) || !model.id) {
        return;
    }
    const anchor = hierarchy.el.querySelector('.g-folder-list-container');
    if (!anchor) {
        return;
    }
    const token = {};
    hierarchy._resolverToken = token;
    const panel = new DatasetPanel(model);
    // Hidden, with nothing clickable in it, until the visitor's login state is known.
    panel.el.hidden = true;
    anchor.before(panel.el);
    Promise.all([panel.load(), whenLoginKnown().then(() => notebooks.refresh())]).then(() => {
        if (hierarchy._resolverToken !== token || !panel.el.isConnected) {
            return;
        }
        panel.render();
        decorateFolderLinks(hierarchy.el);
    }).catch((err) => {
        console.warn('Data DNS: could not list datasets:', err.message); // eslint-disable-line no-console
    });
}
