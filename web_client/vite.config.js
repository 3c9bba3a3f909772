// A library build, the way Girder's own plugins build their web clients
// (plugins/homepage, plugins/jobs): one UMD script that Girder loads after its
// own bundle, reaching Girder through the global `girder` object, plus one CSS
// file. girder_resolver/__init__.py registers exactly these two names.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  build: {
    outDir: resolve(here, '../girder_resolver/web_client_dist'),
    // The output directory lies outside web_client/; it holds nothing but this build.
    emptyOutDir: true,
    sourcemap: Boolean(process.env.SOURCE_MAPS),
    lib: {
      entry: resolve(here, 'src/main.js'),
      name: 'GirderPluginResolver',
      formats: ['umd'],
      fileName: () => 'girder-plugin-resolver.umd.cjs',
      cssFileName: 'style',
    },
  },
});
