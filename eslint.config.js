// ESLint (flat config): JavaScript's and typescript-eslint's recommended rules over all
// TypeScript sources, plus one layering rule: product code never imports tests or test support.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', 'vmm-native/build/', 'guest/', 'build/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // A closure may read a `let` before its one assignment (e.g. a handler set up later).
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    files: ['common/src/**/*.ts', 'shim/src/**/*.ts', 'runtime-config/src/**/*.ts'],
    ignores: ['**/*.test.ts', '**/testing/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/testing/*', '*.test.js', '**/integration-tests/**'], message: 'product code must not import tests or test support (see tsconfig.json)' }] },
      ],
    },
  },
);
