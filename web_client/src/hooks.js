// What the plugin adds to Girder's own pages.

import { attachDatasetPanel, decorateFolderLinks } from './views/DatasetPanel';

const { wrap } = girder.utilities.PluginUtils;
const { AdminView, CollectionView, FolderView } = girder.views.body;
const { GlobalNavView } = girder.views.layout;
const { FolderListWidget, HierarchyWidget } = girder.views.widgets;
const { getCurrentUser } = girder.auth;

// Collection and folder pages: the datasets, with Launch / Open / Stop. The
// hierarchy widget re-renders when the user moves through folders, so the panel
// follows it; widgets elsewhere (folder pickers in dialogs) are left alone.
wrap(HierarchyWidget, 'render', function (render, ...args) {
    const result = render.apply(this, args);
    if (this.parentView instanceof CollectionView || this.parentView instanceof FolderView) {
        attachDatasetPanel(this);
    }
    return result;
});

wrap(FolderListWidget, 'render', function (render, ...args) {
    const result = render.apply(this, args);
    decorateFolderLinks(this.el);
    return result;
});

// Admin console: the federation page and the settings.
wrap(AdminView, 'render', function (render, ...args) {
    const result = render.apply(this, args);
    const user = getCurrentUser();
    if (user && user.get('admin')) {
        this.$('ul.g-admin-options').append(`
          <li class="g-resolver-admin-federation">
            <a href="#resolver/federation"><i class="icon-globe"></i> Data DNS federation</a>
          </li>
          <li class="g-resolver-admin-settings">
            <a href="#plugins/resolver/config"><i class="icon-link"></i> Data DNS settings</a>
          </li>`);
    }
    return result;
});

// The global navigation: "My runs" for a logged-in person (the #runs page).
wrap(GlobalNavView, 'render', function (render, ...args) {
    const result = render.apply(this, args);
    if (getCurrentUser() && !this.el.querySelector('.g-resolver-nav-runs')) {
        const item = document.createElement('li');
        item.className = 'g-global-nav-li g-resolver-nav-runs';
        item.innerHTML = '<a class="g-nav-link" g-target="runs" g-name="resolverRuns" href="#runs"><i class="icon-play"></i><span>My runs</span></a>';
        const list = this.el.querySelector('ul.g-global-nav');
        if (list) {
            list.appendChild(item);
        }
    }
    return result;
});
