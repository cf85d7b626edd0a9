import {render} from 'preact';
import {App} from './app.js';

/** The page's entry: index.html loads this bundle and `styles.css`, nothing inline (the CSP allows no inline script or style). */
render(<App/>, document.getElementById('app')!);
