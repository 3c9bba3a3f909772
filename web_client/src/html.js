// Tiny HTML templating: every interpolated value is escaped unless wrapped in raw().
// (Girder's own plugins use pug; plain template literals keep this client to one
// build dependency, vite.)

const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

class Raw {
    constructor(text) {
        this.text = text;
    }

    toString() {
        return this.text;
    }
}

export function raw(text) {
    return new Raw(String(text));
}

export function escape(value) {
    return String(value ?? '').replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

function render(value) {
    if (value === null || value === undefined || value === false) {
        return '';
    }
    if (value instanceof Raw) {
        return value.text;
    }
    if (Array.isArray(value)) {
        return value.map(render).join('');
    }
    return escape(value);
}

/** Tagged template: html`<b>${name}</b>` escapes name; returns a raw() fragment. */
export function html(strings, ...values) {
    let out = strings[0];
    values.forEach((value, i) => {
        out += render(value) + strings[i + 1];
    });
    return raw(out);
}
