"""Registration: a site's claim to its name and the set of datasets it says it holds.

It owns what a registration decides: who may claim a name (the first registrar owns
it; never this server's own name), what happens to a stored credential when the
address changes, which entries are valid, added, renamed or gone (``full`` replaces
the site's set, ``partial`` adds to it), and which new claims are *disputed*
(another owner's site, or this server, already holds the identifier). The writes
themselves are the models' (``models/site``, ``models/dataset``).

A registration with a new ``apiUrl`` and no credential forgets the old one, so it is
never sent to the new address. A disputed claim is kept (the same dataset may well be
mirrored) but flagged, so that /resolve ranks it after undisputed copies and shows
who operates each location (``operator``).
"""

from girder.exceptions import ValidationException
from girder.models.user import User

from .. import credentials, errors, settings
from ..federation import UnsafeUrl, checkApiUrl
from ..identifiers import InvalidIdentifier, normalize
from ..models.dataset import WRITE_BATCH, Dataset, validFolderId
from ..models.site import Site, bounded
from ..primitives import now
from ..settings import PluginSettings, validToolId

MAX_NAME_LENGTH = 512
MAX_CREDENTIAL_LENGTH = 512
#: How many disputed identifiers a site record lists (the count is kept in full).
MAX_DISPUTED_LISTED = 50
#: Most tools a site may register.
MAX_TOOLS = 50


def validateEntry(entry):
    """(identifier, folderId, name, tool) for one registered dataset, or raise
    ValueError(reason); ``tool`` is the id of the tool it recommends, or None."""
    if not isinstance(entry, dict):
        raise ValueError('each dataset must be an object')
    try:
        ident = normalize(entry.get('identifier'))
    except InvalidIdentifier as exc:
        raise ValueError(str(exc))
    folderId = entry.get('folderId')
    if not validFolderId(folderId):
        raise ValueError('folderId must be 1-64 letters, digits, "_" or "-"')
    name = entry.get('name', ident.canonical)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f'name must be a non-empty string of at most {MAX_NAME_LENGTH} characters')
    tool = entry.get('tool')
    if tool is not None and not validToolId(tool):
        raise ValueError('tool must be a tool id (1-40 lowercase letters, digits or "-")')
    return ident, folderId, name.strip(), tool


def validateTools(tools):
    """The tools a site offers, as registered: ``[{id, name, ready, default}]``, checked.

    Raises :class:`InvalidRequest` naming what is wrong.
    """
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise errors.InvalidRequest(f'"tools" is a list of at most {MAX_TOOLS} tools.')
    out, seen = [], set()
    for tool in tools:
        if not isinstance(tool, dict) or set(tool) - {'id', 'name', 'ready', 'default'}:
            raise errors.InvalidRequest(
                'Each of "tools" is {"id", "name", "ready": true|false, "default": true|false}.'
            )
        toolId, name = tool.get('id'), tool.get('name', tool.get('id'))
        if not validToolId(toolId) or toolId in seen:
            raise errors.InvalidRequest(
                f'"tools": {str(toolId)[:60]!r} is not a tool id, or is listed twice (ids are '
                '1-40 lowercase letters, digits or "-").'
            )
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise errors.InvalidRequest(
                f'"tools": the name of "{toolId}" is a text of 1-100 characters.'
            )
        seen.add(toolId)
        out.append(
            {
                'id': toolId,
                'name': name.strip(),
                'ready': tool.get('ready') is True,
                'default': tool.get('default') is True,
            }
        )
    return out


def claim(name, user, fields):
    """Create the site ``name`` owned by ``user`` with ``fields``, or update it if ``user``
    owns it (an admin owns every site). Raises ValidationException for a bad field."""
    if name == settings.get(PluginSettings.SITE_NAME):
        raise errors.Conflict(
            f'"{name}" is the name of this server\'s own site (its resolver.site_name); '
            'register under another name, or change resolver.site_name at one of the '
            'two servers.'
        )
    sites = Site()
    site = sites.findOne({'name': name})
    if site is None:
        created = sites.create(
            {
                'name': name,
                'ownerId': user['_id'],
                'operator': user.get('login'),
                'created': now(),
                'datasetCount': 0,
                'limits': {},
                **fields,
            }
        )
        if created is not None:
            return created
        # Someone registered the same name a moment ago: they own it.
        site = sites.findOne({'name': name})
    sites.requireOwner(site, user)
    unset = ()
    # A new address without a new credential: the old one must never go there.
    if fields['apiUrl'] != site.get('apiUrl') and 'credentialSealed' not in fields:
        unset = ('credentialSealed',)
    limits = site.get('limits') or {}
    if 'declaredWeight' in fields:
        fields['weight'] = bounded(fields['declaredWeight'], limits.get('weight'))
    if 'operator' not in site:
        owner = User().load(site['ownerId'], force=True) or {}
        fields['operator'] = owner.get('login')
    sites.validate({**{k: v for k, v in site.items() if k not in unset}, **fields})
    return sites.setFields(site, fields, unset)


def siteFields(apiUrl, credential, weight, frontDoorUrl, notebookHost, moment, tools=None):
    """The site's fields a registration sets, checked; raises InvalidRequest or Unavailable."""
    # Decided from the URL alone, before anything is stored or sent anywhere.
    try:
        apiUrl = checkApiUrl(apiUrl)
    except UnsafeUrl as exc:
        raise errors.InvalidRequest(str(exc))
    if credential is not None and (
        not isinstance(credential, str) or not 0 < len(credential) <= MAX_CREDENTIAL_LENGTH
    ):
        raise errors.InvalidRequest(
            f'"credential" is a non-empty string of at most {MAX_CREDENTIAL_LENGTH} characters.'
        )
    fields = {'apiUrl': apiUrl, 'lastHeartbeat': moment, 'lastRegistration': moment}
    if credential is not None:
        try:
            fields['credentialSealed'] = credentials.seal(credential)
        except (OSError, credentials.CredentialKeyError) as exc:
            raise errors.Unavailable(
                'This resolver cannot store launch credentials now: it has no key to '
                f'encrypt them with ({type(exc).__name__}); its admin must set '
                f'{credentials.KEY_ENV} or make {credentials.KEY_FILE_ENV} writable.'
            )
    if weight is not None:
        if (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not (0 <= weight <= 1000)
        ):
            raise errors.InvalidRequest('A site weight is a number from 0 to 1000.')
        fields['declaredWeight'] = weight
        fields['weight'] = weight
    if frontDoorUrl is not None:
        fields['frontDoorUrl'] = frontDoorUrl
    if notebookHost is not None:
        fields['notebookHost'] = notebookHost
    if tools is not None:
        fields['tools'] = validateTools(tools)
    return fields


def register(
    user,
    name,
    apiUrl,
    datasets,
    mode='full',
    removed=(),
    credential=None,
    weight=None,
    frontDoorUrl=None,
    notebookHost=None,
    tools=None,
):
    """Record a site's datasets; ``full`` replaces the site's set, ``partial`` adds to it.

    Every entry is validated on its own: rejected ones are listed with their
    reason and the valid ones are kept. ``tools``, if given, replaces the list of
    tools the site offers (``[{id, name, ready, default}]``). Returns the counts.
    """
    if mode not in ('full', 'partial'):
        raise errors.InvalidRequest('mode must be "full" or "partial".')
    if not isinstance(datasets, list) or not isinstance(removed, list | tuple):
        raise errors.InvalidRequest('"datasets" and "removed" must be lists.')
    if mode == 'full' and removed:
        raise errors.InvalidRequest('"removed" only makes sense with mode "partial".')
    limit = settings.get(PluginSettings.MAX_REGISTRATION)
    if len(datasets) + len(removed) > limit:
        raise errors.TooLarge(
            f'A registration holds at most {limit} datasets; send the rest with mode "partial".'
        )
    moment = now()
    fields = siteFields(apiUrl, credential, weight, frontDoorUrl, notebookHost, moment, tools)
    try:
        site = claim(name, user, fields)
    except ValidationException as exc:
        raise errors.InvalidRequest(str(exc))

    wanted, rejected = {}, []
    for entry in datasets:
        try:
            ident, folderId, dsName, tool = validateEntry(entry)
        except ValueError as exc:
            rejected.append({'identifier': shown(entry), 'reason': str(exc)})
            continue
        wanted[(ident.canonical, folderId)] = (ident.scheme, dsName, tool)
    unwanted = []
    for entry in removed:
        try:
            ident, folderId, _, _ = validateEntry({**entry, 'name': 'x', 'tool': None})
        except (ValueError, TypeError) as exc:
            rejected.append({'identifier': shown(entry), 'reason': str(exc)})
            continue
        unwanted.append((ident.canonical, folderId))

    datasetModel = Dataset()
    existing = datasetModel.remoteEntries(name, None if mode == 'full' else list(wanted) + unwanted)
    added, renamed = {}, {}
    for key, (scheme, dsName, tool) in wanted.items():
        old = existing.get(key)
        if old is None:
            added[key] = (scheme, dsName, tool)
        elif old.get('name') != dsName or old.get('tool') != tool:
            renamed[old['_id']] = (dsName, tool)
    if mode == 'full':
        gone = [doc['_id'] for key, doc in existing.items() if key not in wanted]
    else:
        gone = [existing[key]['_id'] for key in unwanted if key in existing]
    datasetModel.writeRemote(name, added, renamed, gone, moment)
    disputed = flagDisputed(site, user, added)

    counts = {'datasetCount': datasetModel.countRemote(name)}
    if disputed or gone or site.get('disputedCount'):
        counts['disputedCount'] = datasetModel.countRemote(name, disputed=True)
        counts['disputed'] = datasetModel.disputedIdentifiers(name, MAX_DISPUTED_LISTED)
    Site().setFields(site, counts)
    return {
        'site': name,
        'mode': mode,
        'added': len(added),
        'updated': len(renamed),
        'removed': len(gone),
        'total': counts['datasetCount'],
        'rejected': rejected,
        'disputed': disputed,
    }


def flagDisputed(site, user, keys):
    """Flag new entries whose identifier another owner's site (or this server) holds.

    The claim is kept — the same dataset may well be mirrored — but marked, so
    that /resolve ranks it after undisputed copies and shows who operates it.
    Returns ``[{identifier, heldBy}]`` for the answer.
    """
    datasetModel = Dataset()
    flagged = {}
    idents = sorted({ident for ident, _ in keys})
    for start in range(0, len(idents), WRITE_BATCH):
        holders = datasetModel.holders(idents[start : start + WRITE_BATCH], site['name'])
        names = {d['site'] for docs in holders.values() for d in docs if not d.get('local')}
        owners = Site().owners(names) if names else {}
        for ident, docs in holders.items():
            for doc in docs:
                if doc.get('local'):
                    foreign = not user.get('admin')
                else:
                    foreign = owners.get(doc['site']) not in (None, site['ownerId'])
                if foreign:
                    flagged[ident] = doc['site']
                    break
    if flagged:
        datasetModel.flagDisputed(site['name'], flagged)
    return [{'identifier': i, 'heldBy': flagged[i]} for i in sorted(flagged)]


def withdraw(site):
    """Remove ``site`` and every dataset it registered."""
    Dataset().removeSite(site['name'])
    Site().remove(site)


def shown(entry):
    """What to call a rejected entry in the response: its identifier text, cut short."""
    value = entry.get('identifier') if isinstance(entry, dict) else entry
    return str(value)[:200]
