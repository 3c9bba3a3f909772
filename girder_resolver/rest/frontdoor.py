"""What the front door shows at ``/notebook/<id>/`` when no notebook runs there.

The front door sends every path without a route to this Girder; a notebook's
route is removed the moment it stops, so from then on its address lands here
and gets a page that says so and how to launch it again, rather than an error
(API and websocket paths below it get a short JSON answer, status 410).
"""

import html
import json

import cherrypy

from ..services import notebooks


class StoppedNotebookPages:
    """Mounted at ``/notebook`` on Girder's server root."""

    exposed = True

    @cherrypy.expose
    def default(self, notebookId=None, *rest, **params):
        doc = notebooks.load(notebookId) if notebookId else None
        status = (doc or {}).get('status')
        if status == 'running':
            what = 'This notebook is starting up behind the front door; reload in a moment.'
        elif status in ('launching', 'stopping'):
            what = f'This notebook is {status}.'
        elif doc is not None:
            what = 'This notebook was stopped.'
        else:
            what = 'There is no notebook here: it was stopped, or the link is wrong.'
        relaunch = (
            "To work on the dataset again, launch a notebook from the dataset's page in Girder "
            '(its Launch button) or from the repository link you came by; you get a fresh '
            'notebook. Files you saved in the stopped one are gone with it.'
        )
        if rest and rest[0] == 'api':
            cherrypy.response.status = 410
            cherrypy.response.headers['Content-Type'] = 'application/json'
            return json.dumps({'message': f'{what} {relaunch}', 'status': status}).encode()
        cherrypy.response.headers['Content-Type'] = 'text/html; charset=utf-8'
        cherrypy.response.headers['Cache-Control'] = 'no-store'
        folder = (doc or {}).get('folderId')
        link = (
            f'<p><a href="/#folder/{html.escape(str(folder))}">Open the dataset in Girder</a></p>'
            if folder
            else '<p><a href="/">Go to Girder</a></p>'
        )
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Notebook stopped</title>'
            '</head><body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">'
            f'<h1>Notebook not running</h1><p>{html.escape(what)}</p>'
            f'<p>{html.escape(relaunch)}</p>{link}</body></html>'
        ).encode()
