"""Tools (#16): the default tool entries, and whether a tool is ready on each backend.

A tool is an entry of ``resolver.tools`` (see girder_resolver/tools.py); the
launchers run it when ``LaunchSpec.tool`` is set and say whether it can run here
(``Launcher.tool_ready``).
"""

import os
import sys

import pytest

from girder_resolver import tools
from girder_resolver.launcher import LaunchError, LaunchSpec, get_launcher
from plugin_tests.launcher_helpers import dockerEngine

NOTEBOOK_IMAGE = os.environ.get('DATADNS_NOTEBOOK_IMAGE', 'localhost/datadns-notebook:latest')


def test_the_default_tools_name_their_environment_and_image(monkeypatch, tmp_path):
    monkeypatch.setenv('DATADNS_TOOLS_DIR', str(tmp_path))
    defaults = tools.default_tools()
    assert [tool['id'] for tool in defaults] == ['python', 'scientific-python', 'r']
    assert tools.default_tool_ids() == ['python', 'scientific-python', 'r']
    assert tools.DEFAULT_TOOL == 'python'
    for tool in defaults:
        assert tool['ui'] == 'lab'
        assert tool['process']['env'] == str(tmp_path / tool['id'])
        assert tool['docker']['image'] == f'localhost/datadns-tool-{tool["id"]}:latest'
        assert tool['name'] and tool['description']
    assert defaults[2]['kernels'] == ['ir']
    for bad in ('', 'Python', '-x', 'a/b', 'x' * 41, None):
        with pytest.raises(ValueError):
            tools.env_dir(bad)


def test_the_tools_directory_is_outside_the_clone(monkeypatch):
    monkeypatch.delenv('DATADNS_TOOLS_DIR', raising=False)
    expected = '/var/lib/datadns/tools' if os.geteuid() == 0 else None
    assert tools.tools_dir() == (expected or os.path.expanduser('~/.local/share/datadns/tools'))


def test_a_launch_spec_takes_a_tool_dict_with_an_id(tmp_path):
    spec = LaunchSpec('nb1', 'tok', str(tmp_path), tool={'id': 'python', 'ui': 'notebook'})
    assert spec.tool == {'id': 'python', 'ui': 'notebook'}
    assert LaunchSpec('nb1', 'tok', str(tmp_path)).tool is None
    for bad in ({'name': 'x'}, 'python', {'id': ''}, {'id': 'x', 'ui': 'vscode'}):
        with pytest.raises(LaunchError):
            LaunchSpec('nb1', 'tok', str(tmp_path), tool=bad)


def test_a_process_tool_is_ready_only_with_its_environment(tmp_path):
    launcher = get_launcher('process', work_root=str(tmp_path / 'work'))
    env = tmp_path / 'env'
    tool = {'id': 'mine', 'process': {'env': str(env)}}
    ready, reason = launcher.tool_ready(tool)
    assert not ready and 'scripts/build-tools.sh mine' in reason and str(env) in reason
    (env / 'bin').mkdir(parents=True)
    (env / 'bin' / 'python').symlink_to(sys.executable)
    ready, reason = launcher.tool_ready(tool)
    assert not ready and 'no jupyter_server' in reason
    (env / 'lib' / 'python3.11' / 'site-packages' / 'jupyter_server').mkdir(parents=True)
    assert launcher.tool_ready(tool) == (True, '')
    ready, reason = launcher.tool_ready({'id': 'mine', 'docker': {'image': 'x'}})
    assert not ready and 'no process environment' in reason


def test_a_docker_tool_whose_image_is_missing_is_not_ready(tmp_path):
    for _client in dockerEngine('tool readiness', NOTEBOOK_IMAGE):
        launcher = get_launcher('docker', run_root=str(tmp_path))
        missing = {'id': 'gone', 'docker': {'image': f'localhost/datadns-no-such-{os.getpid()}:x'}}
        ready, reason = launcher.tool_ready(missing)
        assert not ready and 'scripts/build-tools.sh --docker gone' in reason
        present = {'id': 'nb', 'docker': {'image': NOTEBOOK_IMAGE}}
        assert launcher.tool_ready(present) == (True, '')
        ready, reason = launcher.tool_ready({'id': 'nb', 'process': {'env': '/x'}})
        assert not ready and 'no image' in reason
