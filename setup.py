"""Data DNS: resolve persistent identifiers to notebooks next to the data.

Installs two packages: ``girder_resolver`` (the Girder 5 plugin) and ``feder8``
(the sidecar each site runs beside its Girder).
"""

from setuptools import find_packages, setup

setup(
    name='datadns',
    version='0.1.0',
    description='Resolve dataset identifiers (DOI, Handle, ARK, URN, URL) to Jupyter '
    'notebooks next to the data, across a federation of Girder sites.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11',
    packages=find_packages(
        include=[
            'girder_resolver',
            'girder_resolver.*',
            'feder8',
            'feder8.*',
            'datadns',
            'datadns.*',
        ]
    ),
    include_package_data=True,
    package_data={'girder_resolver': ['web_client_dist/*', 'web_client_dist/**/*']},
    install_requires=[
        'girder>=5.0,<6',
        'girder-client>=5.0,<6',
        'idutils>=1.2',
        'click>=8',
        'requests>=2.28',
        'tenacity>=8',
        'psutil>=5.9',
        'cachetools>=5',
        'prometheus-client>=0.17',
        'docker>=7',
        # The embedded database `datadns up` (`make run`) starts; production points Girder
        # at MongoDB instead, but the package's own command must work as installed.
        'SecantusDB',
        'jupyter_server>=2.10',
        # The classic notebook UI (file listing at /tree) as a jupyter_server extension:
        # the lightest UI that shows the dataset; jupyterlab would add ~3x the dependencies.
        'nbclassic>=1.0',
    ],
    extras_require={
        'test': [
            'pytest>=8',
            'pytest-girder>=5.0,<6',
            'pytest-timeout',
            'hypothesis',
            'playwright',
            'ruff',
            'schemathesis>=4.32,<5',
        ],
    },
    entry_points={
        'girder.plugin': ['resolver = girder_resolver:ResolverPlugin'],
        'console_scripts': ['feder8 = feder8.cli:main', 'datadns = datadns.cli:main'],
    },
)
