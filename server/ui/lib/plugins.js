// The views of plugin schemas, by schema name. A plugin's view module registers itself
// (registerPlugin) with the label of its link and the table whose rows for a project mean the
// project has something to show; the runs view links to each that has rows, and app.js routes
// #/p/<project>/<schema> to it.

const PLUGINS = new Map();

// registerPlugin("optuna", {label: "Optuna study", table: "trials", view}); view is called as
// every view is (see app.js).
export function registerPlugin(schema, { label, table, view }) {
  PLUGINS.set(schema, { schema, label, table, view });
}

// The registered plugin of a schema, or null.
export const plugin = (schema) => PLUGINS.get(schema) || null;

// Every registered plugin, in the order they registered.
export const plugins = () => [...PLUGINS.values()];
