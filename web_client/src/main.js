// Data DNS web client: a Girder 5 plugin. Girder loads this script after its own
// bundle; everything of Girder's is reached through the global `girder` object.

import './style.css';
import './routes';
import './hooks';

import * as api from './api';
import * as notebooks from './notebooks';
import * as runs from './runs';
import NotebookControls from './views/NotebookControls';
import ResolveView from './views/ResolveView';

girder.pluginUtils.registerPluginNamespace('resolver', { api, notebooks, runs, NotebookControls, ResolveView });
